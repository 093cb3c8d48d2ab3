"""Parameter sweeps: a grid of points solved in chunks, serially, with joblib, or on a dask cluster."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .cluster import resolve_client
from .fast import STAT_COLUMNS
from .grid import make_grid
from .result import SweepResult
from .solvers import SOLVERS, check_solver, solve_chunk

BACKENDS = ("serial", "loky", "threading", "dask")
#: Largest chunk per task: ~0.1–0.3 s of fast-path work, ~1.5 s of solve_ivp.
_MAX_CHUNK = {"fast": 4096, "reference": 64, "seed": 256}


def sweep(
    *,
    solver: str = "fast",
    rtol: float | None = None,
    atol: float | None = None,
    n_jobs: int = 1,
    backend: str | None = None,
    cluster: Any = None,
    chunk_size: int | None = None,
    progress: bool = True,
    **values: Any,
) -> SweepResult:
    """Solve every point of a grid: 1-D sequences are axes (in keyword order), scalars are fixed.

    ``sweep(G=np.linspace(10, 100, 32), alpha=np.linspace(0.02, 0.2, 32), r=0.1)``. Chunks of points
    run serially, with joblib (``n_jobs``; threads by default for the fast solver, else "loky"
    processes) or on a dask cluster (backend "dask", ``cluster`` = Client, cluster or scheduler
    address); every backend gives bit-identical results.
    """
    check_solver(solver)
    grid = make_grid(**values)
    backend = _choose_backend(backend, n_jobs, cluster, solver)
    rtol = SOLVERS[solver][1] if rtol is None else float(rtol)
    atol = SOLVERS[solver][2] if atol is None else float(atol)
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    P = grid.matrix()
    t0 = time.perf_counter()
    client, owned = resolve_client(cluster) if backend == "dask" else (None, False)
    try:
        workers = _worker_count(backend, n_jobs, client)
        size = _default_chunk(len(P), workers, solver) if chunk_size is None else chunk_size
        if size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {size}")
        bounds = [(i, min(i + size, len(P))) for i in range(0, len(P), size)]
        states = np.empty((len(P), 4))
        stats = np.empty((len(P), len(STAT_COLUMNS)))
        with _progress_bar(len(P), progress, solver) as bar:
            for (a, b), (s, st) in zip(bounds, _run(P, bounds, solver, rtol, atol, backend, n_jobs, client)):
                states[a:b], stats[a:b] = s, st
                bar.update(b - a)
    finally:
        if owned:
            client.close()
    seconds = time.perf_counter() - t0
    return SweepResult(
        axes=grid.axes, fixed=grid.fixed, state=states.reshape(*grid.shape, 4),
        stats={name: stats[:, k].reshape(grid.shape) for k, name in enumerate(STAT_COLUMNS)},
        solver=solver, rtol=rtol, atol=atol, seconds=seconds, n_jobs=workers, backend=backend,
        meta={"chunk_size": size, "chunks": len(bounds)},
    )


def _choose_backend(backend: str | None, n_jobs: int, cluster: Any, solver: str) -> str:
    """The backend to use; by default threads for the fast solver (numba releases the GIL, no start-up)."""
    if backend is None:
        if cluster is not None:
            backend = "dask"
        elif n_jobs == 1:
            backend = "serial"
        else:
            backend = "threading" if solver == "fast" else "loky"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if cluster is not None and backend != "dask":
        raise ValueError(f"cluster= is only used with backend='dask', not {backend!r}")
    if not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive int or -1 (all cores/workers), got {n_jobs!r}")
    return backend


def _worker_count(backend: str, n_jobs: int, client: Any) -> int:
    """How many chunks can run at once (for chunk sizing and the summary)."""
    if backend == "serial":
        return 1
    if backend == "dask":
        info = client.scheduler_info()["workers"].values()
        total = sum(w.get("nthreads", 1) for w in info) or 1
        return total if n_jobs == -1 else min(n_jobs, total)
    from joblib import cpu_count

    return cpu_count() if n_jobs == -1 else n_jobs


def _default_chunk(n_points: int, workers: int, solver: str) -> int:
    """About four chunks per worker (load balance, progress), never more than _MAX_CHUNK points each."""
    return max(1, min(_MAX_CHUNK[solver], math.ceil(n_points / (4 * workers))))


def _run(P: np.ndarray, bounds: list[tuple[int, int]], solver: str, rtol: float, atol: float,
         backend: str, n_jobs: int, client: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunk results in chunk order."""
    if backend == "serial":
        for a, b in bounds:
            yield solve_chunk(P[a:b], solver, rtol, atol)
        return
    from joblib import Parallel, delayed, parallel_config

    tasks = (delayed(solve_chunk)(P[a:b], solver, rtol, atol) for a, b in bounds)
    if backend == "dask":
        with parallel_config(backend="dask", client=client, n_jobs=n_jobs):
            yield from Parallel(return_as="generator", batch_size=1)(tasks)
    else:
        yield from Parallel(n_jobs=n_jobs, backend=backend, return_as="generator", batch_size=1)(tasks)


def _progress_bar(total: int, enabled: bool, solver: str) -> Any:
    """A tqdm bar (a widget in notebooks) counting points; disabled when ``enabled`` is False."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="pt", desc=f"josephson sweep ({solver})", leave=False)
