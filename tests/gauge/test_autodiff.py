"""Jacobian products of batched fields: torch.func first, plain autograd only for what torch.func cannot trace."""
import pytest
import torch
from torch.testing import assert_close

from genstat.gauge._autodiff import jacobian, jvp_vjp
from genstat.gauge.decompose import _score_from

D64 = torch.float64


def _energy_field(x):
    # a field written the pre-torch.func way: autograd.grad inside (grad of sum x^3 / 3 = x^2)
    with torch.enable_grad():
        xr = x if x.requires_grad else x.detach().requires_grad_(True)
        return torch.autograd.grad((xr**3).sum() / 3, xr, create_graph=True)[0]


def test_fields_calling_autograd_grad_still_work():
    x = torch.randn(5, 3, dtype=D64, generator=torch.Generator().manual_seed(0))
    v = torch.randn(5, 3, dtype=D64, generator=torch.Generator().manual_seed(1))
    J = jacobian(_energy_field, x)
    assert_close(J, torch.diag_embed(2 * x))
    y, jv, jtv = jvp_vjp(_energy_field, x, v)
    assert_close(y, x**2)
    assert_close(jv, 2 * x * v)
    assert_close(jtv, 2 * x * v)


class _Broken:
    """A field with a real bug: after ``ok_calls`` good calls it raises a RuntimeError that has nothing to
    do with torch.func."""

    def __init__(self, ok_calls=0, log_prob=False):
        self.calls, self.ok_calls, self.log_prob = 0, ok_calls, log_prob

    def __call__(self, x):
        self.calls += 1
        if self.calls > self.ok_calls:
            raise RuntimeError("CUDA out of memory (simulated)")
        return -0.5 * (x * x).sum(1) if self.log_prob else x


@pytest.mark.parametrize("op", ["jacobian", "jvp_vjp", "score_from_log_prob"])
def test_real_errors_are_not_swallowed_by_the_fallback(op):
    # issue 16: every RuntimeError used to trigger the autograd fallback, which ran the field a second
    # time and could hide (or, for a transient error, silently paper over) the real failure.
    x = torch.randn(4, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    # the log-density is called once to read its output shape, then differentiated
    f = _Broken(ok_calls=1, log_prob=True) if op == "score_from_log_prob" else _Broken()
    with pytest.raises(RuntimeError, match="out of memory"):
        if op == "jacobian":
            jacobian(f, x)
        elif op == "jvp_vjp":
            jvp_vjp(f, x, x)
        else:
            _score_from(f, x)
    assert f.calls == f.ok_calls + 1
