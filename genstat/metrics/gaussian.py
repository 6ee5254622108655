"""Bures-Wasserstein distance and BW-UVP between Gaussians (issue: lightsb)."""
__all__: list[str] = []
