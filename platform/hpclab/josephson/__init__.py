"""φ0 Josephson junction: LLG magnet coupled to the junction phase, driven by a current pulse.

``simulate`` gives one trajectory (solve_ivp reference), ``sweep`` a reversal map over a parameter
grid (numba fast path, joblib or dask-on-SLURM). Names are imported on first use, so ``hpclab``'s
command line stays quick to start.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "JunctionParams": "params",
    "VoltageParams": "params",
    "simulate": "reference",
    "Trajectory": "trajectory",
    "sweep": "sweep",
    "SweepResult": "result",
    "load_sweep": "result",
    "make_grid": "grid",
    "solve_batch": "fast",
    "slurm_cluster": "cluster",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hpclab.josephson' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
