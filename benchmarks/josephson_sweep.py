#!/usr/bin/env python
"""The φ0 Josephson reversal map: the seed's per-point solve_ivp against hpclab's fast path.

On the seed's 32 x 32 grid (G 10–100, α 0.02–0.2, r = 0.1, A_s = 1.5, t_s = 25, Δt = 5, w = 1,
t_end = 60), in one run:

* the tight reference map (solve_ivp DOP853, rtol 1e-10, pulse edges as breakpoints), which the
  agreement figures compare against;
* the seed's method on one core: solve_ivp RK45 with default tolerances, one point after another,
  pulse edges as breakpoints so it is not wrong; "as written" samples 1000 points of t like the
  seed (t_eval), "lean" asks for the final state only;
* the fast path (numba DOP853, per-point error control) on one core, after a warm-up call;
* the alternative that was measured against it: DOP853 vectorised over the grid with numpy
  (every point keeps its own step size; defined here, not shipped);
* parallel efficiency on this machine's cores: the fast path with threads and with loky processes
  on a larger grid (the 32 x 32 map is too short to time), the seed's method with loky processes.

Run from the repository root (an otherwise idle machine; numbers are wall seconds):

    .venv/bin/python benchmarks/josephson_sweep.py            # ~1–2 minutes on 2 cores
    .venv/bin/python benchmarks/josephson_sweep.py --repeat 5

Prints a table, the speed ratio against the 100x goal, and writes
benchmarks/results/josephson_sweep-<timestamp>.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from scipy.integrate import solve_ivp

from harness import add_out_option, machine_info, write_results
from hpclab.josephson import JunctionParams, SweepResult, sweep
from hpclab.josephson.fast import DOP853
from hpclab.josephson.reference import current_function, segments

_NS, _A, _B, _E5, _E3 = DOP853  # the fast path's own tableau

FIXED = dict(r=0.1, A_s=1.5, t_s=25.0, delta_t=5.0, w=1.0, t_end=60.0)


def seed_as_written(G: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The seed's funk_parall loop body, serially: RK45 defaults, t_eval of 1000 points, + breakpoints."""
    mz = np.empty((len(G), len(alpha)))
    for i, g in enumerate(G):
        for j, a in enumerate(alpha):
            p = JunctionParams(G=g, alpha=a, **FIXED)
            t_e = np.linspace(0, p.t_end, 1000)
            y = np.array([0.0, 0.0, 1.0, 0.0])
            for t0, t1, current in segments(p):
                # the seed's samples inside this piece, plus the piece's end to carry the state on
                t_eval = np.union1d(t_e[(t_e >= t0) & (t_e <= t1)], [t1])
                sol = solve_ivp(current_function(p, current), (t0, t1), y, t_eval=t_eval)
                y = sol.y[:, -1]
            mz[i, j] = y[2]
    return mz


def _rhs_vec(Y: np.ndarray, G, r, alpha, w, current) -> np.ndarray:
    """The model of hpclab.josephson.model, vectorised over rows of Y (for the numpy alternative)."""
    mx, my, mz, phi = Y.T
    s = np.sin(phi - r * my)
    hy = G * r * s
    hz = mz
    mh = my * hy + mz * hz
    msq = mx * mx + my * my + mz * mz
    pre = -1.0 / (1.0 + alpha * alpha)
    dmx = pre * ((my * hz - mz * hy) + alpha * (mx * mh))
    dmy = pre * ((-mx * hz) + alpha * (my * mh - msq * hy))
    dmz = pre * ((mx * hy) + alpha * (mz * mh - msq * hz))
    return np.stack([dmx, dmy, dmz, (current - s) / w + r * dmy], axis=1)


def vectorised_dop853(P: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Final states of all rows of P at once: the fast path's algorithm as numpy array operations."""
    n = len(P)
    G, r, alpha, w, A_s, t_s, delta_t, t_end = P.T
    on = np.clip(t_s - delta_t / 2, 0, t_end)
    off = np.clip(t_s + delta_t / 2, 0, t_end)
    edges = np.stack([np.zeros(n), on, off, t_end], axis=1)
    currents = np.stack([np.zeros(n), A_s, np.zeros(n)], axis=1)
    Y = np.tile([0.0, 0.0, 1.0, 0.0], (n, 1))
    t = np.zeros(n)
    h = np.full(n, 1e-3)
    seg = np.zeros(n, dtype=int)
    while True:
        # skip empty pieces, find the points still running
        empty = (seg < 3) & (edges[np.arange(n), np.minimum(seg + 1, 3)] <= t)
        seg[empty] += 1
        h[empty] = 1e-3
        idx = np.nonzero(seg < 3)[0]
        if idx.size == 0:
            return Y
        y, ti, hi, k = Y[idx], t[idx], h[idx], seg[idx]
        t1 = edges[idx, k + 1]
        last = ti + hi >= t1
        hi = np.where(last, t1 - ti, hi)
        args = (G[idx], r[idx], alpha[idx], w[idx], currents[idx, k])
        K = np.empty((_NS + 1, idx.size, 4))
        K[0] = _rhs_vec(y, *args)
        for s in range(1, _NS):
            K[s] = _rhs_vec(y + hi[:, None] * np.tensordot(_A[s, :s], K[:s], axes=1), *args)
        yn = y + hi[:, None] * np.tensordot(_B, K[:_NS], axes=1)
        K[_NS] = _rhs_vec(yn, *args)
        scale = atol + rtol * np.maximum(np.abs(y), np.abs(yn))
        e5 = np.sum((np.tensordot(_E5, K, axes=1) / scale) ** 2, axis=1)
        e3 = np.sum((np.tensordot(_E3, K, axes=1) / scale) ** 2, axis=1)
        denom = np.sqrt((e5 + 0.01 * e3) * 4)
        err = np.where(e5 + e3 == 0, 0.0, hi * e5 / np.where(denom == 0, 1, denom))
        ok = err <= 1
        with np.errstate(divide="ignore"):
            grow = np.where(err == 0, 10.0, np.minimum(10.0, 0.9 * err ** -0.125))
            shrink = np.maximum(0.2, 0.9 * err ** -0.125)
        norm = np.linalg.norm(yn[:, :3], axis=1)
        yn[:, :3] /= norm[:, None]
        Y[idx[ok]] = yn[ok]
        t[idx[ok]] = np.where(last[ok], t1[ok], ti[ok] + hi[ok])
        h[idx] = hi * np.where(ok, grow, shrink)
        done_piece = idx[ok & last]
        seg[done_piece] += 1
        h[done_piece] = 1e-3


def timed(fn, repeat: int) -> tuple[list[float], object]:
    """Wall seconds of ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def agreement(mz: np.ndarray, ref: SweepResult) -> dict[str, float]:
    return {"agreement": float(np.mean((mz < 0) == ref.reversed)),
            "max_abs_dmz": float(np.max(np.abs(mz - ref.mz_final)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32, help="grid points per axis (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the fast timings (default 3)")
    parser.add_argument("--parallel-n", type=int, default=128, help="grid per axis for the fast-path efficiency")
    add_out_option(parser, "josephson_sweep")
    args = parser.parse_args()
    info = machine_info("numpy", "scipy", "numba", "joblib")
    cores = os.cpu_count() or 1
    G = np.linspace(10, 100, args.n)
    alpha = np.linspace(0.02, 0.2, args.n)
    grid = dict(G=G, alpha=alpha, **FIXED)
    rows: dict[str, dict] = {}

    print(f"grid {args.n} x {args.n} = {args.n**2} points, {cores} cores")
    ref = sweep(**grid, solver="reference", n_jobs=cores, progress=False)
    rows["reference (solve_ivp DOP853 1e-10, all cores)"] = {"seconds": ref.seconds, "agreement": 1.0, "max_abs_dmz": 0.0}
    print(f"reference done in {ref.seconds:.1f} s")

    t_lean, lean = timed(lambda: sweep(**grid, solver="seed", progress=False), 1)
    rows["seed lean (RK45 defaults, final state, 1 core)"] = {"seconds": t_lean[0], **agreement(lean.mz_final, ref)}
    t_written, mz_written = timed(lambda: seed_as_written(G, alpha), 1)
    rows["seed as written (RK45, t_eval 1000, 1 core)"] = {"seconds": t_written[0], **agreement(mz_written, ref)}

    t0 = time.perf_counter()
    sweep(G=[10.0], alpha=[0.1], progress=False)  # load (or compile) the numba code
    warmup = time.perf_counter() - t0
    t_fast, fast = timed(lambda: sweep(**grid, progress=False), args.repeat)
    rows["fast (numba DOP853 rtol 1e-7, 1 core)"] = {
        "seconds": statistics.median(t_fast), "all_seconds": t_fast, "warmup_seconds": warmup,
        "mean_steps": float(fast.stats["steps"].mean()), "mean_rhs_calls": float(fast.stats["rhs_calls"].mean()),
        "max_norm_defect": float(fast.stats["norm_defect"].max()),
        "max_final_norm_error": float(np.max(np.abs(np.linalg.norm(fast.state[..., :3], axis=-1) - 1))),
        **agreement(fast.mz_final, ref),
    }
    P = np.array([[g, FIXED["r"], a, FIXED["w"], FIXED["A_s"], FIXED["t_s"], FIXED["delta_t"], FIXED["t_end"]]
                  for g in G for a in alpha])
    t_vec, vec = timed(lambda: vectorised_dop853(P, fast.rtol, fast.atol), 1)
    rows["numpy vectorised DOP853 rtol 1e-7 (1 core)"] = {"seconds": t_vec[0], **agreement(vec[:, 2].reshape(args.n, args.n), ref)}

    # parallel efficiency
    big = dict(G=np.linspace(10, 100, args.parallel_n), alpha=np.linspace(0.02, 0.2, args.parallel_n), **FIXED)
    par: dict[str, dict] = {}
    t1, _ = timed(lambda: sweep(**big, progress=False), 1)
    sweep(**big, n_jobs=cores, backend="loky", progress=False)  # start the worker processes once
    for backend in ("threading", "loky"):
        tn, _ = timed(lambda: sweep(**big, n_jobs=cores, backend=backend, progress=False), 1)
        par[f"fast {backend} {args.parallel_n}x{args.parallel_n}"] = {
            "serial_seconds": t1[0], "parallel_seconds": tn[0], "jobs": cores, "efficiency": t1[0] / (cores * tn[0])}
    tn, _ = timed(lambda: sweep(**grid, solver="seed", n_jobs=cores, backend="loky", progress=False), 1)
    par[f"seed loky {args.n}x{args.n}"] = {"serial_seconds": t_lean[0], "parallel_seconds": tn[0], "jobs": cores,
                                           "efficiency": t_lean[0] / (cores * tn[0])}

    print(f"\n{'method':<50} {'seconds':>9} {'agreement':>10} {'max|dmz|':>9}")
    for name, row in rows.items():
        print(f"{name:<50} {row['seconds']:>9.3f} {row['agreement']:>10.4f} {row['max_abs_dmz']:>9.1e}")
    fast_s = rows["fast (numba DOP853 rtol 1e-7, 1 core)"]["seconds"]
    ratio_lean = t_lean[0] / fast_s
    ratio_written = t_written[0] / fast_s
    print(f"\nfast path: {fast_s / args.n**2 * 1e6:.1f} us per point; warm-up (numba cache load or compile) {warmup:.2f} s")
    print(f"speed ratio seed/fast: {ratio_lean:.0f}x (lean), {ratio_written:.0f}x (as written); goal >= 100x: "
          f"{'met' if ratio_lean >= 100 else 'NOT met'}")
    print(f"numpy vectorised vs numba: {rows['numpy vectorised DOP853 rtol 1e-7 (1 core)']['seconds'] / fast_s:.1f}x slower")
    print(f"|m| − 1: max before projection {rows['fast (numba DOP853 rtol 1e-7, 1 core)']['max_norm_defect']:.1e}")
    print("\nparallel efficiency (T1 / (jobs x Tjobs)):")
    for name, row in par.items():
        print(f"  {name:<28} {row['serial_seconds']:.3f} s -> {row['parallel_seconds']:.3f} s on {row['jobs']} "
              f"jobs: {row['efficiency']:.0%}")

    out = write_results("josephson_sweep", {
        "machine": {**info, "loadavg_end": list(os.getloadavg())}, "grid": {"n": args.n, **FIXED}, "methods": rows,
        "speed_ratio_lean": ratio_lean, "speed_ratio_as_written": ratio_written, "parallel": par,
    }, args.out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
