"""``apply``: run a block function over a volume in windows with halos, in parallel, resumable.

Engine: dask, as for Josephson sweeps. One worker runs in this process; more start a local
``distributed`` cluster of processes (one thread each); ``cluster=`` takes any dask Client, cluster
(a dask-jobqueue SLURMCluster from :func:`hpclab.dask_cluster.slurm_cluster`) or scheduler address.
Every window writes whole chunks of the target, then leaves a marker; an interrupted run resumes by
skipping the windows that have one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .store import create_volume, local_path, open_volume
from .windows import Window, per_axis, plan_windows, window_for_memory

#: attribute of the target where apply records how it was made (and whether it finished)
RECORD = "hpclab_apply"
MARKERS = ".hpclab-windows"
#: the share of a dask worker's memory limit its windows may fill (dask starts spilling at 60 %)
WORKER_SHARE = 0.6
#: seconds without a worker able to run (none, or all paused) before apply gives up
STUCK_S = 60.0


def _function_name(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(func).__name__)}"


def _run_window(func: Callable[[np.ndarray], np.ndarray], source: Any, target: Any, window: Window, markers: str | None) -> str:
    """Read one padded block, apply ``func``, write its interior into ``target``, leave the window's marker."""
    block = np.asarray(source[window.padded])
    out = np.asarray(func(block))
    if out.shape != block.shape:
        raise ValueError(
            f"{_function_name(func)} returned shape {out.shape} for a block of shape {block.shape}: "
            "apply needs a function that keeps the block's shape"
        )
    target[window.interior] = out[window.crop]
    if markers is not None:
        Path(markers, window.key).touch()
    return window.key


class _Progress:
    """Which windows are written: marker files beside the target's chunks (or a set, for memory stores)."""

    def __init__(self, target: Any) -> None:
        folder = local_path(target)
        self.folder = folder / MARKERS if folder is not None else None
        self.done: set[str] = set()
        if self.folder is not None:
            self.folder.mkdir(exist_ok=True)
            self.done = {p.name for p in self.folder.iterdir()}

    @property
    def markers(self) -> str | None:
        return str(self.folder) if self.folder is not None else None

    def finish(self, target: Any) -> None:
        record = dict(target.attrs.get(RECORD, {}))
        target.attrs[RECORD] = {**record, "complete": True}
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _budget(memory_per_worker: int | None, workers: int, client: Any, gpu: bool) -> int:
    """Bytes one worker may use for a window: given, the GPU's, the cluster workers' limit or this host's share."""
    if memory_per_worker is not None:
        return int(memory_per_worker)
    if gpu:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("windows sized for a GPU (gpu=True, or a function made for the GPU) but torch sees no GPU here")
        return int(torch.cuda.mem_get_info()[0])
    if client is not None:
        # what a worker may still take: dask pauses a worker at 80 % of its limit and spills from 60 %;
        # stay under the spill mark, less what the worker process holds already
        room = [
            WORKER_SHARE * w["memory_limit"] - (w.get("metrics") or {}).get("memory", 0)
            for w in client.scheduler_info()["workers"].values()
            if w.get("memory_limit")
        ]
        if room:
            return max(int(min(room)), 0)
    from ..session import available_memory

    return int((available_memory() or 4 * 2**30) // max(workers, 1))


def _target_chunks(source: Any, window: tuple[int, ...]) -> tuple[int, ...]:
    """The source's chunks where they divide the window (a pipeline keeps its chunk size), else the window."""
    whole = tuple(min(w, n) for w, n in zip(window, source.shape, strict=True))
    chunks = getattr(source, "chunks", None)
    if chunks is None:  # a NumPy array
        return whole
    if all(w >= n or w % c == 0 for w, c, n in zip(window, chunks, source.shape, strict=True)):
        return tuple(min(c, w) for c, w in zip(chunks, whole, strict=True))
    return whole


def _existing_target(target: Any) -> Any:
    """The target array opened for writing when it exists already (None when apply is to create it)."""
    import zarr

    exists = isinstance(target, zarr.Array) or (Path(target) / "zarr.json").exists()
    return open_volume(target, mode="r+") if exists else None


def _recorded_window(existing: Any, ndim: int) -> tuple[int, ...] | None:
    """The window an earlier apply recorded in the ``existing`` target (None for a new target or no record)."""
    window = dict(existing.attrs.get(RECORD, {})).get("window") if existing is not None else None
    if not isinstance(window, list) or len(window) != ndim:
        return None
    return tuple(int(w) for w in window)


def _target(
    target: Any,
    existing: Any,
    source: Any,
    window: tuple[int, ...],
    halo: tuple[int, ...],
    dtype: Any,
    compression: str,
    func: Callable[..., Any],
) -> Any:
    """The target array: ``existing`` (:func:`_existing_target`) checked against this run, or created (chunks:
    :func:`_target_chunks`)."""
    record = {"window": list(window), "halo": list(halo), "source_shape": list(source.shape), "function": _function_name(func)}
    if existing is None:
        chunks = _target_chunks(source, window)
        return create_volume(target, source.shape, dtype, chunks=chunks, compression=compression, attributes={RECORD: record})
    array = existing
    if tuple(array.shape) != tuple(source.shape):
        raise ValueError(f"target has shape {tuple(array.shape)}, the source {tuple(source.shape)}")
    if any(w < n and w % c for w, c, n in zip(window, array.chunks, array.shape, strict=True)):
        raise ValueError(
            f"window {window} is not a whole number of the target's chunks {array.chunks}: two windows would write the same chunk"
        )
    earlier = dict(array.attrs.get(RECORD, {}))
    if earlier:
        mismatch = {k: (earlier.get(k), v) for k, v in record.items() if earlier.get(k) != v}
        if mismatch:
            detail = "; ".join(f"{k} was {a}, now {b}" for k, (a, b) in mismatch.items())
            raise ValueError(
                f"target was written by another apply ({detail}): use the same settings to resume, or another target"
            )
    else:
        array.attrs[RECORD] = record
    return array


def apply(
    func: Callable[[np.ndarray], np.ndarray],
    source: Any,
    target: Any,
    *,
    window: int | Sequence[int] | None = None,
    halo: int | Sequence[int] = 0,
    workers: int | None = None,
    cluster: Any = None,
    dtype: Any = None,
    memory_per_worker: int | None = None,
    gpu: bool = False,
    bytes_per_voxel: float | None = None,
    compression: str = "zstd",
    progress: bool = True,
) -> Any:
    """Apply ``func`` (a NumPy block -> block of the same shape) over ``source`` window by window into ``target``.

    ``source``: a zarr array, a path to one, or a NumPy array. ``target``: a zarr array or a path,
    created when missing (the source's shape, ``dtype`` or the source's, the source's chunks where
    they divide the window, else chunks = window,
    ``compression``). Each window reads ``halo`` extra voxels per side (clipped at the volume's
    edges), so the result equals ``func(whole volume)`` when the halo covers the function's reach.
    ``window=None`` sizes cubic windows from the memory a worker has (``memory_per_worker``, the
    GPU's free memory with ``gpu=True``, the dask workers' limit, or this host's share) at
    ``bytes_per_voxel`` of working memory (default: the function's own ``bytes_per_voxel``
    attribute, as :class:`hpclab.volumes.models.ModelBlock` has, else four float64 copies); a
    function with a true ``gpu`` attribute is sized from the GPU. With ``window=None`` and a target
    that an earlier run recorded its window in (an interrupted or finished run), that window is
    reused, so a resume goes on even when the memory it would be sized from has changed.
    ``workers``: 1 runs here, N > 1 on a local dask cluster of N processes (default: the cores
    :func:`hpclab.session` grants); ``cluster``: a dask Client, cluster or address (SLURM workers).
    Windows already written by an interrupted run with the same settings are skipped. Returns the
    target array.
    """
    import zarr

    src = open_volume(source)
    gpu = gpu or bool(getattr(func, "gpu", False))
    bytes_per_voxel = bytes_per_voxel or getattr(func, "bytes_per_voxel", None)
    ndim = len(src.shape)
    halo_t = per_axis(halo, ndim, "halo")
    if workers is None and cluster is None:
        from ..session import session

        workers = session().cores
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    client: Any = None  # a dask Client, and the local cluster this call started
    owned_cluster: Any = None
    owned_client = False
    try:
        if cluster is not None:
            from ..dask_cluster import resolve_client

            client, owned_client = resolve_client(cluster)
        elif workers is not None and workers > 1:  # set above (the session's cores) when no cluster is given
            from distributed import Client

            from ..dask_cluster import local_cluster

            owned_cluster = local_cluster(workers)
            client, owned_client = Client(owned_cluster, set_as_default=False), True
        n = workers or len(client.scheduler_info()["workers"]) or 1
        existing = _existing_target(target)
        recorded = _recorded_window(existing, ndim) if window is None else None
        if recorded is not None:  # resuming: the windows the earlier run wrote, whatever the memory now
            window_t = recorded
        elif window is None:
            budget = _budget(memory_per_worker, n, client, gpu)
            chunks = getattr(src, "chunks", None)
            window_t = window_for_memory(
                src.shape, budget, halo_t, chunks=chunks if isinstance(src, zarr.Array) else None, bytes_per_voxel=bytes_per_voxel
            )
        else:
            window_t = per_axis(window, ndim, "window")
        tgt = _target(
            target, existing, src, window_t, halo_t, np.dtype(dtype) if dtype is not None else src.dtype, compression, func
        )
        record = dict(tgt.attrs.get(RECORD, {}))
        if record.get("complete"):
            return tgt
        windows = plan_windows(src.shape, window_t, halo_t)
        state = _Progress(tgt)
        todo = [w for w in windows if w.key not in state.done]
        with _bar(len(windows), len(windows) - len(todo), progress) as bar:
            if client is None:
                for w in todo:
                    _run_window(func, src, tgt, w, state.markers)
                    bar.update()
            else:
                if local_path(tgt) is None:
                    raise ValueError("workers in other processes cannot write a target held in memory: give a path")
                shared = client.scatter(src, broadcast=True) if isinstance(src, np.ndarray) else src
                _run_on(client, func, shared, tgt, todo, state.markers, bar)
        state.finish(tgt)
        return tgt
    finally:
        if client is not None and owned_client:
            client.close()
        if owned_cluster is not None:
            owned_cluster.close()


def _run_on(client: Any, func: Callable[..., Any], src: Any, tgt: Any, todo: list[Window], markers: str | None, bar: Any) -> None:
    """Submit every window to the dask client; update the bar as they finish; cancel the rest on any error.

    A cluster with no worker able to run (SLURM jobs ended, workers that could not start, or every
    worker paused by dask because its memory is above 80 % of its limit) would leave the futures
    pending forever: after :data:`STUCK_S` seconds like that this raises, naming the cause.
    """
    import time

    futures = [
        client.submit(_run_window, func, src, tgt, w, markers, key=f"hpclab-window-{w.key}-{os.getpid()}", pure=False)
        for w in todo
    ]
    pending = set(futures)
    stuck_since: float | None = None
    try:
        while pending:
            done = {f for f in pending if f.done()}
            pending -= done
            if not done:
                time.sleep(0.2)
            for future in done:
                future.result()  # re-raises a window's error here, with its traceback
                bar.update()
            if done:
                stuck_since = None
                continue
            workers = client.scheduler_info()["workers"]
            if any(w.get("status") != "paused" for w in workers.values()):
                stuck_since = None
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since > STUCK_S:
                raise RuntimeError(_stuck_message(workers, len(pending)))
    except BaseException:
        client.cancel(futures)
        raise


def _stuck_message(workers: dict[str, Any], left: int) -> str:
    if workers:
        return (
            f"every dask worker ({len(workers)}) has been paused for {STUCK_S:.0f} s with {left} windows left: "
            "dask pauses a worker whose memory is above 80 % of its limit; give the workers more memory or "
            "pass a smaller window"
        )
    return (
        f"no dask workers for {STUCK_S:.0f} s with {left} windows left: the workers ended (wall time, "
        "scancel) or could not start; see their logs"
    )


def _bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="window", desc="volumes.apply", leave=False)
