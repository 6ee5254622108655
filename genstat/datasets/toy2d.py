"""2-D toy samplers and Gaussian mixtures with exact log-density (issue: interpolants)."""
__all__: list[str] = []
