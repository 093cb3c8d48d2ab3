"""Reference solutions with scipy's solve_ivp: pulse edges as breakpoints, tight tolerances."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy.integrate import solve_ivp

from .model import current_rhs, llg
from .params import JunctionParams, VoltageParams
from .trajectory import Trajectory

#: Tolerances of the reference the tests trust (DOP853).
REFERENCE_METHOD = "DOP853"
REFERENCE_RTOL = 1e-10
REFERENCE_ATOL = 1e-12

INITIAL_STATE = (0.0, 0.0, 1.0, 0.0)


def segments(params: JunctionParams) -> list[tuple[float, float, float]]:
    """(start, end, current) pieces of [0, t_end] on which I(t) is constant, split at the pulse edges.

    Integrating piece by piece keeps an adaptive solver from stepping over the pulse.
    """
    edges = sorted(
        {0.0, min(max(params.pulse_start, 0.0), params.t_end), min(max(params.pulse_end, 0.0), params.t_end), params.t_end}
    )
    pieces = []
    for a, b in itertools.pairwise(edges):
        mid = 0.5 * (a + b)
        on = params.pulse_start <= mid <= params.pulse_end
        pieces.append((a, b, params.A_s if on else 0.0))
    return pieces


def current_function(p: JunctionParams, current: float):
    """The right-hand side f(t, y) at a constant bias ``current`` (units of I_c), for scipy's solve_ivp."""

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        return np.array(current_rhs(y[0], y[1], y[2], y[3], p.G, p.r, p.alpha, p.w, current))

    return fun


def _voltage_fun(p: VoltageParams):
    def fun(t: float, y: np.ndarray) -> np.ndarray:
        return np.array(llg(y[0], y[1], y[2], p.V * t, p.G, p.r, p.alpha)[:3])

    return fun


def _check(sol, where: str) -> None:
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed {where}: {sol.message}")


def simulate(
    params: JunctionParams | VoltageParams,
    t_eval: Sequence[float] | np.ndarray | None = None,
    *,
    n_points: int = 1001,
    method: str = REFERENCE_METHOD,
    rtol: float = REFERENCE_RTOL,
    atol: float = REFERENCE_ATOL,
) -> Trajectory:
    """One trajectory from m = (0, 0, 1), φ = 0, sampled at ``t_eval`` (default: n_points over [0, t_end]).

    Uses solve_ivp piecewise between the pulse edges; the defaults are the tight reference tolerances.
    """
    t_grid = np.linspace(0.0, params.t_end, n_points) if t_eval is None else np.asarray(t_eval, dtype=float)
    if t_grid.ndim != 1 or t_grid.size == 0 or np.any(np.diff(t_grid) <= 0):
        raise ValueError("t_eval must be a non-empty, strictly increasing 1-D sequence")
    if t_grid[0] < 0 or t_grid[-1] > params.t_end:
        raise ValueError(f"t_eval must lie in [0, t_end={params.t_end}], got [{t_grid[0]}, {t_grid[-1]}]")
    if isinstance(params, VoltageParams):
        sol = solve_ivp(
            _voltage_fun(params), (0.0, params.t_end), np.array(params.m0), method=method, t_eval=t_grid, rtol=rtol, atol=atol
        )
        _check(sol, f"for {params}")
        phi = params.V * sol.t
        return Trajectory(sol.t, sol.y, phi, np.zeros_like(sol.t), params, method, sol.nfev)
    y = np.array(INITIAL_STATE)
    ts, ys, nfev = [], [], 0
    pieces = segments(params)
    for k, (a, b, current) in enumerate(pieces):
        last = k == len(pieces) - 1
        inside = t_grid[(t_grid >= a) & ((t_grid <= b) if last else (t_grid < b))]
        sol = solve_ivp(
            current_function(params, current), (a, b), y, method=method, rtol=rtol, atol=atol, dense_output=inside.size > 0
        )
        _check(sol, f"on [{a}, {b}] for {params}")
        nfev += sol.nfev
        if inside.size:
            ts.append(inside)
            ys.append(sol.sol(inside))
        y = sol.y[:, -1]
    t = np.concatenate(ts)
    states = np.concatenate(ys, axis=1)
    pulse = np.where(np.abs(t - params.t_s) <= 0.5 * params.delta_t, params.A_s, 0.0)
    return Trajectory(t, states[:3], states[3], pulse, params, method, nfev)


def final_state(
    params: JunctionParams,
    *,
    method: str = REFERENCE_METHOD,
    rtol: float = REFERENCE_RTOL,
    atol: float = REFERENCE_ATOL,
) -> tuple[np.ndarray, int, int]:
    """(y(t_end), accepted steps, right-hand-side calls) for one point, solve_ivp piecewise at the pulse edges."""
    y = np.array(INITIAL_STATE)
    steps = nfev = 0
    for a, b, current in segments(params):
        sol = solve_ivp(current_function(params, current), (a, b), y, method=method, rtol=rtol, atol=atol)
        _check(sol, f"on [{a}, {b}] for {params}")
        steps += sol.t.size - 1
        nfev += sol.nfev
        y = sol.y[:, -1]
    return y, steps, nfev


def norm_defect(y: np.ndarray) -> float:
    """| |m| − 1 | of a state (m_x, m_y, m_z, φ)."""
    return abs(math.sqrt(float(y[0] ** 2 + y[1] ** 2 + y[2] ** 2)) - 1.0)
