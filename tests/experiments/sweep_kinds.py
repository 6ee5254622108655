"""Experiment kinds and helpers for the sweep/collect/report tests.

A module of its own (not a test file) so that sweep worker processes (fork server, submitit jobs)
can import it by name and find the kinds registered. Environment variables steer it from a test:
``SWEEP_TEST_CALLS`` (a file: one line ``x seed`` per call), ``SWEEP_TEST_HOLD`` (a file: while it
exists, the cell at ``hold_at`` writes ``<file>.started`` and waits), ``SWEEP_TEST_FAIL`` (a file:
while it exists, the cell at ``fail_at`` raises).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genstat.experiments import experiment


class SweepToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float = Field(1.0, gt=0)
    method: Literal["a", "b"] = "a"
    repeats: int = Field(1, ge=1, description="rows per component (averaged within a run by collect)")
    hold_at: float | None = None
    fail_at: float | None = None


def _env_file(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


@experiment("test.sweep", SweepToyParams, help="sweep test kind: seeded normal draws around x")
def sweep_toy(p: SweepToyParams, run) -> None:
    calls = _env_file("SWEEP_TEST_CALLS")
    if calls is not None:
        with open(calls, "a") as f:
            f.write(f"{p.x:g} {run.seed}\n")
    hold = _env_file("SWEEP_TEST_HOLD")
    if hold is not None and p.hold_at == p.x and hold.exists():
        hold.with_name(hold.name + ".started").touch()
        deadline = time.monotonic() + 120
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    fail = _env_file("SWEEP_TEST_FAIL")
    if fail is not None and p.fail_at == p.x and fail.exists():
        raise RuntimeError(f"planned failure at x={p.x}")
    rng = np.random.default_rng([run.seed, round(p.x * 1000)])
    for step, comp in enumerate(("u", "v")):
        for _ in range(p.repeats):
            value = p.x + rng.standard_normal()
            run.metric(step=step, component=comp, value=value)
            run.add_results({"component": comp, "method": p.method, "d": 2, "value": value,
                             "wall_s": float(rng.uniform(0.1, 0.2)), "ok": bool(value > 0)})
    run.log(f"x={p.x} seed={run.seed} done")


def hammer(sweep_dir: str, tag: str, n: int) -> None:
    """Add ``n`` entries ``<tag>-<i>`` to a manifest, one locked update each (concurrency test)."""
    from genstat.experiments.manifest import update_manifest

    for i in range(n):
        def add(m, i=i):
            m = m or {"cells": {}}
            m["cells"][f"{tag}-{i}"] = {"i": i, "pad": "x" * 2000}
            return m

        update_manifest(sweep_dir, add)
