"""Manifold datasets with exact noised scores (issue: gauge)."""
__all__: list[str] = []
