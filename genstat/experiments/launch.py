"""Process layout of one ``genstat run``: a single process, or one rank of a ``torchrun`` job.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``, also across nodes) :func:`session` initialises the default process group (``nccl``
for CUDA devices, each rank on ``cuda:LOCAL_RANK``; ``gloo`` on CPU), over which
:func:`genstat.mc.estimate` and :func:`genstat.mc.replicate` shard their blocks, plus a CPU
``gloo`` control group with a long timeout. The control group carries the run directory from
rank 0 to the others and the exit code back, and is what ranks that have nothing to do wait on
while rank 0 runs a kind that does not shard (a training loop may take hours; the default group's
timeout, and nccl's watchdog, would end the wait much sooner).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

__all__ = ["Session", "session", "torchrun_env", "DIST_TIMEOUT_S"]

#: timeout of the control group (seconds): how long ranks wait for rank 0 (env GENSTAT_DIST_TIMEOUT_S)
DIST_TIMEOUT_S = 7 * 24 * 3600


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when launched by torchrun (or any ``env://`` launcher),
    else None."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    if not all(k in os.environ for k in keys):
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def env_rank() -> int:
    """This process's rank from the environment (0 outside torchrun): who may print before the
    process group exists."""
    env = torchrun_env()
    return 0 if env is None else env[0]


@dataclass
class Session:
    """Where this process stands: rank, world size, backend, and its compute device."""

    device: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    _control: Any = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (the identity in one process)."""
        if self._control is None:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def agree(self, code: int) -> int:
        """The largest exit code over all ranks, returned on every rank (``code`` in one process).

        A rank that has gone away (its connection closed) counts as a failure: at least 1.
        """
        if self._control is None:
            return code
        import torch.distributed as dist

        t = torch.tensor([code], dtype=torch.int64)
        try:
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._control)
        except (RuntimeError, dist.DistError):
            return max(code, 1)
        return int(t.item())


@contextlib.contextmanager
def session(device: str) -> Iterator[Session]:
    """The :class:`Session` of this process for a run on ``device`` ('cpu', 'cuda', 'cuda:N').

    Outside torchrun: one process on ``device``. Under torchrun: initialises the process group
    (unless the caller already did), yields, then destroys what it created.

    Raises
    ------
    ValueError
        Under torchrun on CUDA when ``LOCAL_RANK`` has no device.
    """
    env = torchrun_env()
    if env is None:
        yield Session(device=device)
        return
    import torch.distributed as dist

    rank, world, local = env
    cuda = device.startswith("cuda")
    if cuda:
        n = torch.cuda.device_count()
        if local >= n:
            raise ValueError(f"LOCAL_RANK {local} needs cuda:{local}, but this node has {n} CUDA device(s); "
                             f"launch at most {n} processes per node")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo",
                                device_id=torch.device(device) if cuda else None)
    timeout = _dt.timedelta(seconds=float(os.environ.get("GENSTAT_DIST_TIMEOUT_S", DIST_TIMEOUT_S)))
    control = dist.new_group(backend="gloo", timeout=timeout)
    try:
        yield Session(device=device, rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                      backend=dist.get_backend(), _control=control)
    finally:
        if owned:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
