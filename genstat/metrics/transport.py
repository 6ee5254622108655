"""W2 (POT), energy distance and MMD with bootstrap CIs (issue: interpolants)."""
__all__: list[str] = []
