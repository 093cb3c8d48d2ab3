"""Parameter sweeps: a grid of points solved in chunks, serially, with joblib, or on a dask cluster.

With ``checkpoint=`` a sweep saves the points it has finished (every few seconds and when it is
interrupted) and a later call with the same checkpoint solves only the rest.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .checkpoint import Checkpoint
from .cluster import resolve_client
from .fast import STAT_COLUMNS
from .grid import make_grid
from .result import SweepResult
from .solvers import SOLVERS, check_solver, solve_chunk

BACKENDS = ("serial", "loky", "threading", "dask")
#: Largest chunk per task: ~0.1–0.3 s of fast-path work, ~1.5 s of solve_ivp.
_MAX_CHUNK = {"fast": 4096, "reference": 64, "seed": 256}
#: Tolerances outside these bounds are refused: looser ones give maps of another problem, tighter ones
#: ask for more than float64 holds.
RTOL_BOUNDS = (1e-13, 1e-2)
ATOL_BOUNDS = (1e-15, 1e-3)
#: Bytes per grid point while sweeping and saving: parameters (8), state (4), stats (4) in float64,
#: the done flags, and a second copy of state and stats while the .npz is written.
BYTES_PER_POINT = 8 * (8 + 2 * 4 + 2 * len(STAT_COLUMNS)) + 2
#: Seconds between checkpoint saves.
CHECKPOINT_EVERY_S = 10.0


def check_tolerances(rtol: float, atol: float) -> None:
    """Raise a ValueError naming the tolerance and its bound if either lies outside RTOL/ATOL_BOUNDS."""
    for name, value, (low, high) in (("rtol", rtol, RTOL_BOUNDS), ("atol", atol, ATOL_BOUNDS)):
        if not (low <= value <= high):
            raise ValueError(f"{name}={value:g} is outside [{low:g}, {high:g}]")


def check_memory(n_points: int, available: int | None = None) -> None:
    """Raise a MemoryError-free ValueError when a grid of ``n_points`` cannot fit in this process's memory."""
    from ..formatting import format_bytes
    from ..session import available_memory

    need = n_points * BYTES_PER_POINT
    have = available_memory() if available is None else available
    if have is not None and need > have:
        raise ValueError(
            f"the grid has {n_points:,} points and needs about {format_bytes(need)} of memory; "
            f"{format_bytes(have)} is available: use fewer points per axis or split the sweep"
        )


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
    checkpoint: str | os.PathLike[str] | None = None,
    keep_checkpoint: bool = False,
    **values: Any,
) -> SweepResult:
    """Solve every point of a grid: 1-D sequences are axes (in keyword order), scalars are fixed.

    ``sweep(G=np.linspace(10, 100, 32), alpha=np.linspace(0.02, 0.2, 32), r=0.1)``. Chunks of points
    run serially, with joblib (``n_jobs``; threads by default for the fast solver, else "loky"
    processes) or on a dask cluster (backend "dask", ``cluster`` = Client, cluster or scheduler
    address); every backend gives bit-identical results.

    ``checkpoint`` (an .npz path): finished points are saved there every few seconds and when the
    sweep is interrupted (Ctrl-C, SIGTERM through :mod:`hpclab.interrupts`); a checkpoint of the
    same grid, solver and tolerances is resumed. It is removed at the end unless ``keep_checkpoint``;
    then it is saved once more with every point, so a signal while the caller saves the result
    (``hpclab josephson sweep``) loses nothing.
    """
    check_solver(solver)
    grid = make_grid(**values)
    check_memory(grid.size)
    backend = _choose_backend(backend, n_jobs, cluster, solver)
    rtol = SOLVERS[solver][1] if rtol is None else float(rtol)
    atol = SOLVERS[solver][2] if atol is None else float(atol)
    check_tolerances(rtol, atol)
    P = grid.matrix()
    saved = Checkpoint.open(checkpoint, P, solver, rtol, atol) if checkpoint is not None else None
    states, stats, done = saved.arrays() if saved else Checkpoint.empty_arrays(len(P))
    todo = np.flatnonzero(~done)
    t0 = time.perf_counter()
    client, owned = resolve_client(cluster) if backend == "dask" else (None, False)
    try:
        workers = _worker_count(backend, n_jobs, client)
        size = _default_chunk(len(todo), workers, solver) if chunk_size is None else chunk_size
        if size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {size}")
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        last_save, unsaved = time.monotonic(), 0
        with _progress_bar(len(P), progress, solver, initial=len(P) - len(todo)) as bar:
            try:
                for idx, (s, st) in zip(chunks, _run(P, chunks, solver, rtol, atol, backend, n_jobs, client), strict=True):
                    states[idx], stats[idx], done[idx] = s, st, True
                    unsaved += len(idx)
                    bar.update(len(idx))
                    if saved and time.monotonic() - last_save > CHECKPOINT_EVERY_S:
                        saved.save(states, stats, done)
                        last_save, unsaved = time.monotonic(), 0
                if saved and keep_checkpoint and unsaved:
                    # every point on disk before the caller writes the result: a signal during that
                    # (long, compressed) write then loses nothing. Uncompressed: ~0.15 s per million points.
                    saved.save(states, stats, done)
            except BaseException:
                if saved:
                    saved.save(states, stats, done)
                raise
    finally:
        if owned and client is not None:
            client.close()
    seconds = time.perf_counter() - t0
    if saved and not keep_checkpoint:
        saved.remove()
    return SweepResult(
        axes=grid.axes,
        fixed=grid.fixed,
        state=states.reshape(*grid.shape, 4),
        stats={name: stats[:, k].reshape(grid.shape) for k, name in enumerate(STAT_COLUMNS)},
        solver=solver,
        rtol=rtol,
        atol=atol,
        seconds=seconds,
        n_jobs=workers,
        backend=backend,
        meta={"chunk_size": size, "chunks": len(chunks), "resumed_points": int(len(P) - len(todo))},
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


def _run(
    P: np.ndarray, chunks: list[np.ndarray], solver: str, rtol: float, atol: float, backend: str, n_jobs: int, client: Any
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunk results in chunk order; each chunk is an array of row indices into ``P``."""
    if backend == "serial":
        for idx in chunks:
            yield solve_chunk(P[idx], solver, rtol, atol)
        return
    from joblib import Parallel, delayed, parallel_config

    tasks = (delayed(solve_chunk)(P[idx], solver, rtol, atol) for idx in chunks)
    if backend == "dask":
        with parallel_config(backend="dask", client=client, n_jobs=n_jobs):
            yield from Parallel(return_as="generator", batch_size=1)(tasks)
    else:
        yield from Parallel(n_jobs=n_jobs, backend=backend, return_as="generator", batch_size=1)(tasks)


def _progress_bar(total: int, enabled: bool, solver: str, initial: int = 0) -> Any:
    """A tqdm bar (a widget in notebooks) counting points; disabled when ``enabled`` is False."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="pt", desc=f"josephson sweep ({solver})", leave=False)
