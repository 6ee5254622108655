"""Every name in every package's ``__all__`` resolves (stale ``__all__`` lists are a known defect)."""
import importlib
import pkgutil

import pytest

import estimators
import genstat


def _packages():
    names = []
    for root in (genstat, estimators):
        names.append(root.__name__)
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            if info.ispkg:
                names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("name", _packages())
def test_all_names_resolve(name):
    mod = importlib.import_module(name)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    for attr in exported:
        assert getattr(mod, attr, None) is not None, f"{name}.__all__ lists {attr!r}, which does not resolve"


def test_library_does_not_import_the_runner():
    import subprocess
    import sys

    code = ("import sys, genstat.mc, genstat.nn, genstat.datasets, genstat.metrics; "
            "bad = [m for m in sys.modules if m.startswith(('genstat.experiments', 'genstat.cli'))]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
