"""Dask clusters shared by the science modules: local and SLURM clusters whose workers keep to their cores,
client resolution.

Josephson sweeps and windowed volume processing (hpclab.volumes) run on the same engine: local
workers or SLURM jobs through dask-jobqueue, one code path for both.
"""

from __future__ import annotations

import sys
from typing import Any

from .slurm.units import format_time, memory_bytes


def worker_environment(threads: int) -> dict[str, str]:
    """Environment of a worker granted ``threads`` cores: zarr decodes chunks with that many threads, not ten.

    zarr 3 runs its codecs in a thread pool of up to ten threads per process; beside a worker's own
    threads that oversubscribes the cores the worker was granted (measured: a one-thread worker
    used 1.27 cores, and two of them on two cores were only 1.47x one).
    """
    return {"ZARR_THREADING__MAX_WORKERS": str(threads)}


def local_cluster(workers: int, *, threads_per_worker: int = 1, memory_limit: str | int | None = "auto", **kwargs: Any):
    """A distributed LocalCluster of ``workers`` processes that use only the cores they are given.

    Each process runs ``threads_per_worker`` task threads and zarr with as many decode threads
    (:func:`worker_environment`); ``memory_limit`` per worker ("4GiB"; "auto" shares this machine's
    memory); no dashboard. Other keywords go to LocalCluster.
    """
    from distributed import LocalCluster

    if workers < 1 or threads_per_worker < 1:
        raise ValueError(f"workers and threads_per_worker must be >= 1, got {workers}, {threads_per_worker}")
    env = {**worker_environment(threads_per_worker), **kwargs.pop("env", {})}
    kwargs.setdefault("dashboard_address", None)
    return LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                        memory_limit=memory_limit, env=env, **kwargs)


def slurm_cluster(
    *,
    jobs: int = 1,
    cores: int = 1,
    memory: str | int = "2GiB",
    walltime: str | int = "01:00:00",
    queue: str | None = None,
    account: str | None = None,
    python: str | None = None,
    job_extra_directives: list[str] | None = None,
    **kwargs: Any,
):
    """A dask-jobqueue SLURMCluster scaled to ``jobs`` SLURM jobs, each one worker with ``cores`` threads.

    ``memory`` and ``walltime`` are read by hpclab.slurm's units, as for every other job: ``4G`` is 4 GiB,
    a bare number in a string is MiB (as sbatch's ``--mem``), an int is bytes; ``walltime`` is a SLURM
    duration or seconds. Bad values raise ValueError before any scheduler starts.
    Workers run this interpreter (``python``, default sys.executable) so they import the same hpclab;
    the numba solver releases the GIL, so one worker per job with ``cores`` threads uses every core.
    Other keywords go to SLURMCluster (e.g. ``local_directory``, ``log_directory``, ``interface``).
    """
    from dask_jobqueue import SLURMCluster

    if jobs < 1 or cores < 1:
        raise ValueError(f"jobs and cores must be >= 1, got jobs={jobs}, cores={cores}")
    memory, walltime = memory_bytes(memory, default_unit="M"), format_time(walltime)
    prologue = [f"export {name}={value}" for name, value in worker_environment(cores).items()]
    prologue += list(kwargs.pop("job_script_prologue", None) or [])
    cluster = SLURMCluster(
        cores=cores, processes=1, memory=memory, walltime=walltime, queue=queue, account=account,
        python=python or sys.executable, job_extra_directives=list(job_extra_directives or []),
        job_script_prologue=prologue, **kwargs,
    )
    cluster.scale(jobs=jobs)
    return cluster


def resolve_client(cluster: Any):
    """(client, owned): a distributed Client for a Client, a cluster object, a scheduler address or None.

    None means the current default client (``distributed.get_client()``); ``owned`` says whether the
    caller must close the client it got.
    """
    from distributed import Client, get_client

    if cluster is None:
        try:
            return get_client(), False
        except ValueError:
            raise ValueError(
                "backend='dask' needs a cluster: pass cluster=<Client, cluster or scheduler address>, "
                "or create a distributed.Client first"
            ) from None
    if isinstance(cluster, Client):
        return cluster, False
    if isinstance(cluster, str) or hasattr(cluster, "scheduler_address"):
        return Client(cluster, set_as_default=False), True
    raise TypeError(f"cluster must be a distributed Client, a dask cluster or an address, got {type(cluster).__name__}")


def wait_for_workers(client: Any, n: int, timeout: float = 300) -> None:
    """Block until ``n`` workers have joined (SLURM jobs may queue); raise TimeoutError after ``timeout`` s."""
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError:
        raise TimeoutError(f"only {len(client.scheduler_info()['workers'])} of {n} dask workers joined in {timeout} s; "
                           "check squeue for the worker jobs") from None
