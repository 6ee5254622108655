"""Fourth-order cumulant Gaussianity test and OFDM signal identification (Gorcin & Arslan 2015).

- :func:`cumulants`: batched C20, C21, C40, C41, C42 (and normalised C~4q) of complex records.
- :func:`gaussianity_test`: the chi-square CFAR test with white / cyclic-prefix / HAC covariances.
- :mod:`estimators.cumulants.signals`: seeded OFDM / single-carrier generators and impairments.
- :func:`size_power`: Monte Carlo size and power curves (engine-seeded) with binomial CIs;
  baselines :func:`normaltest_test`, :func:`jarque_bera_test`, :func:`c42_threshold_test`.
"""
from . import signals
from .baselines import c42_threshold_test, jarque_bera_test, normaltest_test
from .cumulants import Cumulants, cumulants
from .gaussianity import STATISTICS, GaussianityTestResult, gaussianity_test
from .power import TESTS, SizePowerResult, clopper_pearson, size_power
from .signals import SignalConfig

__all__ = [
    "Cumulants",
    "GaussianityTestResult",
    "STATISTICS",
    "SignalConfig",
    "SizePowerResult",
    "TESTS",
    "c42_threshold_test",
    "clopper_pearson",
    "cumulants",
    "gaussianity_test",
    "jarque_bera_test",
    "normaltest_test",
    "signals",
    "size_power",
]
