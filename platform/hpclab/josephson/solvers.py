"""The three ways to solve a chunk of grid points: fast (numba DOP853), reference and seed (solve_ivp)."""

from __future__ import annotations

import numpy as np

from .fast import FAST_ATOL, FAST_RTOL, STAT_COLUMNS, solve_batch
from .params import JunctionParams
from .reference import REFERENCE_ATOL, REFERENCE_METHOD, REFERENCE_RTOL, final_state, norm_defect

#: solver name -> (solve_ivp method or None for the fast path, default rtol, default atol)
SOLVERS: dict[str, tuple[str | None, float, float]] = {
    "fast": (None, FAST_RTOL, FAST_ATOL),
    "reference": (REFERENCE_METHOD, REFERENCE_RTOL, REFERENCE_ATOL),
    # the seed's method: RK45 with solve_ivp's default tolerances (pulse edges still breakpoints)
    "seed": ("RK45", 1e-3, 1e-6),
}


def check_solver(solver: str) -> None:
    """Raise a ValueError naming the valid solvers if ``solver`` is not one."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")


def solve_chunk(P: np.ndarray, solver: str, rtol: float, atol: float) -> tuple[np.ndarray, np.ndarray]:
    """Final states (n, 4) and stats (n, 4; STAT_COLUMNS) of the points in the (n, 8) matrix ``P``.

    Runs in whichever process or thread the sweep's backend chose; the result depends only on ``P``.
    """
    check_solver(solver)
    method = SOLVERS[solver][0]
    if method is None:
        return solve_batch(P, rtol, atol)
    states = np.empty((len(P), 4))
    stats = np.full((len(P), len(STAT_COLUMNS)), np.nan)
    for k, row in enumerate(P):
        y, steps, nfev = final_state(JunctionParams(*row), method=method, rtol=rtol, atol=atol)
        states[k] = y
        stats[k, 0], stats[k, 2], stats[k, 3] = steps, nfev, norm_defect(y)
    return states, stats
