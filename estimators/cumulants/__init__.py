"""Fourth-order cumulant Gaussianity test and OFDM signal identification (Gorcin & Arslan 2015)."""
from .cumulants import Cumulants, cumulants
from .gaussianity import GaussianityTestResult, gaussianity_test

__all__ = ["Cumulants", "GaussianityTestResult", "cumulants", "gaussianity_test"]
