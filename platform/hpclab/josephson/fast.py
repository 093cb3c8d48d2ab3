"""Fast batch solver: numba-compiled DOP853 (Dormand–Prince 8(5,3)), one parameter point after another.

Each point has its own adaptive step-size control (rtol, atol on all four variables, scipy's DOP853
error norm and step factors), the pulse edges are breakpoints, and m is projected back onto |m| = 1
after every accepted step; the largest | |m| − 1 | seen before a projection is reported, so the drift
the tolerances allow stays visible. Compiled code is cached on disk (numba ``cache=True``) and
releases the GIL, so threads run points in parallel.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
from scipy.integrate._ivp import dop853_coefficients as _dop853

from .model import current_rhs as _rhs

#: Column order of the parameter matrix the batch solver takes.
PARAM_COLUMNS = ("G", "r", "alpha", "w", "A_s", "t_s", "delta_t", "t_end")
#: Default tolerances of the fast path (chosen with benchmarks/josephson_sweep.py; see docs/josephson.md).
FAST_RTOL = 1e-7
FAST_ATOL = 1e-9
#: Columns of the per-point statistics.
STAT_COLUMNS = ("steps", "rejected", "rhs_calls", "norm_defect")

# The tableau is scipy's (Hairer's dop853.f). Module-level arrays are frozen into the compiled code.
_NS = _dop853.N_STAGES
_A = np.ascontiguousarray(_dop853.A[:_NS, :_NS])
_B = np.ascontiguousarray(_dop853.B)
_E5 = np.ascontiguousarray(_dop853.E5)
_E3 = np.ascontiguousarray(_dop853.E3)
_EXPONENT = -1.0 / 8.0  # error estimator of order 7
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
_FIRST_STEP = 1e-3


class Tableau(NamedTuple):
    """The Runge–Kutta tableau this solver integrates with (for a vectorised re-implementation to compare against)."""

    stages: int  # stages per step (the last one, at the new point, is reused as the next step's first)
    A: np.ndarray  # stage coefficients, stages x stages
    B: np.ndarray  # weights of the 8th-order solution
    E5: np.ndarray  # 5th-order error estimator (stages + 1)
    E3: np.ndarray  # 3rd-order error estimator (stages + 1)


#: DOP853's tableau as this module uses it (read-only copies).
DOP853 = Tableau(_NS, *(a.copy() for a in (_A, _B, _E5, _E3)))
for _array in DOP853[1:]:
    _array.flags.writeable = False


@numba.njit(cache=True, nogil=True)
def _integrate(y, t0, t1, current, G, r, alpha, w, rtol, atol, h, stats):
    """Advance y = (m_x, m_y, m_z, φ) in place from t0 to t1 at constant bias; return the next step size."""
    t = t0
    K = np.zeros((_NS + 1, 4))
    yn = np.empty(4)
    f = _rhs(y[0], y[1], y[2], y[3], G, r, alpha, w, current)
    for i in range(4):
        K[0, i] = f[i]
    stats[2] += 1
    while t < t1:
        last = t + h >= t1
        if last:
            h = t1 - t
        for s in range(1, _NS):
            a0 = a1 = a2 = a3 = 0.0
            for j in range(s):
                c = _A[s, j]
                if c != 0.0:  # about half the tableau is zero
                    a0 += c * K[j, 0]
                    a1 += c * K[j, 1]
                    a2 += c * K[j, 2]
                    a3 += c * K[j, 3]
            f = _rhs(y[0] + h * a0, y[1] + h * a1, y[2] + h * a2, y[3] + h * a3, G, r, alpha, w, current)
            for i in range(4):
                K[s, i] = f[i]
        a0 = a1 = a2 = a3 = 0.0
        for j in range(_NS):
            c = _B[j]
            if c != 0.0:
                a0 += c * K[j, 0]
                a1 += c * K[j, 1]
                a2 += c * K[j, 2]
                a3 += c * K[j, 3]
        yn[0], yn[1], yn[2], yn[3] = y[0] + h * a0, y[1] + h * a1, y[2] + h * a2, y[3] + h * a3
        f = _rhs(yn[0], yn[1], yn[2], yn[3], G, r, alpha, w, current)
        for i in range(4):
            K[_NS, i] = f[i]
        stats[2] += _NS
        err5 = 0.0
        err3 = 0.0
        for i in range(4):
            scale = atol + rtol * max(abs(y[i]), abs(yn[i]))
            e5 = 0.0
            e3 = 0.0
            for j in range(_NS + 1):
                e5 += _E5[j] * K[j, i]
                e3 += _E3[j] * K[j, i]
            err5 += (e5 / scale) ** 2
            err3 += (e3 / scale) ** 2
        err = 0.0 if err5 == 0.0 and err3 == 0.0 else h * err5 / math.sqrt((err5 + 0.01 * err3) * 4.0)
        if err <= 1.0:
            stats[0] += 1
            norm = math.sqrt(yn[0] * yn[0] + yn[1] * yn[1] + yn[2] * yn[2])
            stats[3] = max(stats[3], abs(norm - 1.0))
            for i in range(3):
                y[i] = yn[i] / norm
            y[3] = yn[3]
            t = t1 if last else t + h
            # the projected state differs from yn, so its derivative is evaluated afresh (no FSAL)
            f = _rhs(y[0], y[1], y[2], y[3], G, r, alpha, w, current)
            for i in range(4):
                K[0, i] = f[i]
            stats[2] += 1
            factor = _MAX_FACTOR if err == 0.0 else min(_MAX_FACTOR, _SAFETY * err**_EXPONENT)
        else:
            stats[1] += 1
            factor = max(_MIN_FACTOR, _SAFETY * err**_EXPONENT)
        h = h * factor
    return h


@numba.njit(cache=True, nogil=True)
def _solve_point(p, rtol, atol, out_state, stats):
    """Integrate one point (a row of the parameter matrix) from m = (0, 0, 1), φ = 0 to t_end."""
    G, r, alpha, w, A_s, t_s, delta_t, t_end = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    y = np.array([0.0, 0.0, 1.0, 0.0])
    on = min(max(t_s - 0.5 * delta_t, 0.0), t_end)
    off = min(max(t_s + 0.5 * delta_t, 0.0), t_end)
    edges = np.array([0.0, on, off, t_end])
    currents = np.array([0.0, A_s, 0.0])
    for k in range(3):
        if edges[k + 1] > edges[k]:
            # every piece starts with a small step: the bias just jumped, the old step size means nothing
            _integrate(y, edges[k], edges[k + 1], currents[k], G, r, alpha, w, rtol, atol, _FIRST_STEP, stats)
    for i in range(4):
        out_state[i] = y[i]


@numba.njit(cache=True, nogil=True)
def _solve_rows(P, rtol, atol, states, stats):
    for j in range(P.shape[0]):
        _solve_point(P[j], rtol, atol, states[j], stats[j])


def _drop_stale_cache() -> None:
    """Forget compiled code older than model.py: numba's cache only watches this file, not the model."""
    model_mtime = Path(__file__).with_name("model.py").stat().st_mtime
    for dispatcher in (_integrate, _solve_point, _solve_rows):
        cache = getattr(dispatcher, "_cache", None)
        index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        if cache is not None and index and Path(index).exists() and Path(index).stat().st_mtime < model_mtime:
            cache.flush()


_drop_stale_cache()


def solve_batch(P: np.ndarray, rtol: float = FAST_RTOL, atol: float = FAST_ATOL) -> tuple[np.ndarray, np.ndarray]:
    """Final states (n, 4) and per-point stats (n, 4; columns STAT_COLUMNS) for the (n, 8) matrix ``P``.

    ``P`` has columns PARAM_COLUMNS (validated upstream by JunctionParams); one core, points in order.
    """
    P = np.ascontiguousarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != len(PARAM_COLUMNS):
        raise ValueError(f"P must have shape (n, {len(PARAM_COLUMNS)}) with columns {PARAM_COLUMNS}, got {P.shape}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    states = np.empty((P.shape[0], 4))
    stats = np.zeros((P.shape[0], len(STAT_COLUMNS)))
    _solve_rows(P, float(rtol), float(atol), states, stats)
    return states, stats
