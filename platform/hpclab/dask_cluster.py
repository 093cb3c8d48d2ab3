"""Dask clusters shared by the science modules: local and SLURM clusters whose workers keep to their cores,
client resolution.

Josephson sweeps and windowed volume processing (hpclab.volumes) run on the same engine: local
workers or SLURM jobs through dask-jobqueue, one code path for both.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import subprocess
import sys
import threading
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
    memory); a dashboard on a free loopback port where the server offers dask dashboards (the ``dask`` lab
    feature sets ``HPCLAB_DASK_DASHBOARD``, and the link through the server's proxy), else none. Other keywords
    go to LocalCluster.

    The scheduler and workers listen on ``tls://127.0.0.1`` and accept only peers holding this account's key
    (:func:`hpclab.dask_tls.user_security`): every account shares the loopback, and a scheduler runs whatever
    code a connected client sends.
    """
    from distributed import LocalCluster

    if workers < 1 or threads_per_worker < 1:
        raise ValueError(f"workers and threads_per_worker must be >= 1, got {workers}, {threads_per_worker}")
    if kwargs.get("security") is None:
        from .dask_tls import user_security

        kwargs["security"] = user_security()
        kwargs.setdefault("protocol", "tls://")
    env = {**worker_environment(threads_per_worker), **kwargs.pop("env", {})}
    kwargs.setdefault("dashboard_address", "127.0.0.1:0" if os.environ.get("HPCLAB_DASK_DASHBOARD") == "1" else None)
    return LocalCluster(
        n_workers=workers, threads_per_worker=threads_per_worker, processes=True, memory_limit=memory_limit, env=env, **kwargs
    )


def lab_cluster(**kwargs: Any):
    """The cluster of dask-labextension's "+NEW" (the dask lab feature names it in ``labextension.factory``): a
    :func:`local_cluster` of one single-threaded worker per core of the server's allocation, sharing its memory limit
    (hpclab.session), its dashboard linked through the server's proxy. Keywords (``asynchronous=True``) go to it."""
    from .session import allocated_cores, memory_limit

    workers, _ = allocated_cores()
    limit, _ = memory_limit()
    return local_cluster(workers, memory_limit=limit // workers if limit else "auto", **kwargs)


#: seconds a worker job waits for its scheduler before it exits: a job that starts after the process that
#: submitted it died (even by SIGKILL, which nothing can catch) ends itself instead of running to its wall time
WORKER_DEATH_TIMEOUT = 60


class _Submissions:
    """The SLURM job ids one cluster submitted and has not cancelled yet, and whether it may submit more."""

    def __init__(self, cancel_command: str = "scancel") -> None:
        self.ids: set[str] = set()
        self.stopped = False
        self.cancel_command = cancel_command
        self._lock = threading.RLock()  # re-entered by a SIGTERM handler that interrupts cancel_all

    def stop(self) -> None:
        self.stopped = True

    def add(self, job_id: str) -> None:
        with self._lock:
            self.ids.add(job_id)

    def discard(self, job_id: str | None) -> None:
        with self._lock:
            self.ids.discard(job_id)

    def cancel_all(self) -> list[str]:
        """scancel every job still recorded, here and now (no event loop needed: safe in a signal handler)."""
        with self._lock:
            ids, self.ids = sorted(self.ids), set()
        if ids:
            try:
                subprocess.run([*shlex.split(self.cancel_command), *ids], capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                pass  # SLURM unreachable: the workers' death timeout ends the jobs that start later
        return ids


#: clusters from :func:`slurm_cluster` not closed yet; strong references, so that one the caller dropped is
#: still closed at interpreter exit and on SIGTERM instead of keeping its jobs
_open_clusters: list[Any] = []
_atexit_registered = False


def _cancel_open_clusters() -> None:
    """Stop every open cluster from submitting and scancel its jobs (interpreter exit, SIGTERM)."""
    for cluster in list(_open_clusters):
        cluster._submissions.stop()
        cluster._submissions.cancel_all()


def _close_at_exit() -> None:
    _cancel_open_clusters()
    for cluster in list(_open_clusters):
        try:
            cluster.close(timeout=10)
        except Exception:  # the jobs are cancelled already; the scheduler goes with the process
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM: cancel the open clusters' jobs, then end the process as the signal would have (status 128+15)."""
    _cancel_open_clusters()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _guard(cluster: Any) -> None:
    """Register ``cluster`` for interpreter exit and SIGTERM.

    The SIGTERM handler goes in only where SIGTERM would simply end the process (its default handler, set from
    the main thread): a program with its own handler keeps it (hpclab's commands turn SIGTERM into an exception,
    and their ``finally`` closes the cluster; one that exits normally meets the exit hook).
    """
    global _atexit_registered
    _open_clusters.append(cluster)
    if not _atexit_registered:  # after distributed's own atexit hook, so this one runs first
        atexit.register(_close_at_exit)
        _atexit_registered = True
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _cluster_class():
    """The SLURMCluster subclass :func:`slurm_cluster` returns (dask_jobqueue is imported only when asked for)."""
    global _HpclabSLURMCluster
    if _HpclabSLURMCluster is not None:
        return _HpclabSLURMCluster
    from dask_jobqueue import SLURMCluster
    from dask_jobqueue.slurm import SLURMJob

    class TrackedSLURMJob(SLURMJob):
        _submissions: _Submissions  # set on the per-cluster subclass

        async def _submit_job(self, script_filename):
            if self._submissions.stopped:
                raise RuntimeError("this SLURM cluster is closed: it submits no more worker jobs")
            out = await super()._submit_job(script_filename)
            job_id = self._job_id_from_submit_output(out)
            self._submissions.add(job_id)
            if self._submissions.stopped:  # closed while sbatch ran
                self._submissions.cancel_all()  # type: ignore[unreachable]  # stop() can run during the await above
                raise RuntimeError(f"this SLURM cluster was closed while job {job_id} was submitted; cancelled it")
            return out

        async def close(self):
            await super().close()
            self._submissions.discard(self.job_id)

    class HpclabSLURMCluster(SLURMCluster):
        """A SLURMCluster that submits no job once closed and cancels its jobs on close, exit and SIGTERM."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            submissions = _Submissions(getattr(SLURMJob, "cancel_command", "scancel"))
            self._submissions = submissions
            job_cls = type("TrackedSLURMJob", (TrackedSLURMJob,), {"_submissions": submissions})
            # dask_jobqueue annotates job_cls as a Job instance; it takes the class
            super().__init__(*args, job_cls=job_cls, **kwargs)  # type: ignore[misc,arg-type]
            _guard(self)

        # JobQueueCluster.scale's own signature (it adds jobs= to SpecCluster.scale)
        def scale(self, n=None, jobs=0, memory=None, cores=None):  # type: ignore[override]
            if self._submissions.stopped and any((n, jobs, memory, cores)):
                raise RuntimeError("this SLURM cluster is closed: it submits no more worker jobs")
            return super().scale(n, jobs=jobs, memory=memory, cores=cores)

        def adapt(self, *args: Any, **kwargs: Any):
            if self._submissions.stopped:
                raise RuntimeError("this SLURM cluster is closed: it submits no more worker jobs")
            return super().adapt(*args, **kwargs)

        def close(self, timeout: float | None = None):
            self._submissions.stop()  # from here on no sbatch, whatever dask's loop still has queued
            try:
                result = super().close(timeout)
            except BaseException:
                self._forget()
                raise
            if result is None:
                self._forget()
                return None

            async def finish():  # asynchronous=True: dask's close is a coroutine
                try:
                    await result
                finally:
                    self._forget()

            return finish()

        def _forget(self) -> None:
            self._submissions.cancel_all()  # any job dask's close did not reach (e.g. a timeout)
            if self in _open_clusters:
                _open_clusters.remove(self)

    HpclabSLURMCluster.__qualname__ = HpclabSLURMCluster.__name__
    _HpclabSLURMCluster = HpclabSLURMCluster
    return HpclabSLURMCluster


_HpclabSLURMCluster: type | None = None


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

    The cluster's jobs last no longer than the cluster: ``close()``, leaving its ``with`` block, the end of
    the interpreter and SIGTERM cancel every job it submitted, and from then on it submits none (``scale``
    or ``adapt`` raise RuntimeError). A worker whose scheduler is gone exits after ``death_timeout``
    seconds (default :data:`WORKER_DEATH_TIMEOUT`), so even a SIGKILLed process leaves no job running on.

    Scheduler and workers speak mutual TLS with this account's key (:func:`hpclab.dask_tls.user_security`, kept
    in the home that the worker jobs share): other accounts on the cluster network cannot connect.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got jobs={jobs}")
    options = slurm_cluster_options(
        cores=cores,
        memory=memory,
        walltime=walltime,
        queue=queue,
        account=account,
        python=python,
        job_extra_directives=job_extra_directives,
        **kwargs,
    )
    if options.get("security") is None:  # the workers' jobs read the same files from the shared home
        from .dask_tls import user_security

        options["security"] = user_security()
    cluster = _cluster_class()(**options)
    try:
        cluster.scale(jobs=jobs)
    except BaseException:
        cluster.close()
        raise
    return cluster


def slurm_cluster_options(
    *,
    cores: int = 1,
    memory: str | int = "2GiB",
    walltime: str | int = "01:00:00",
    queue: str | None = None,
    account: str | None = None,
    python: str | None = None,
    job_extra_directives: list[str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The keywords :func:`slurm_cluster` gives SLURMCluster (and so each worker job); ValueError on bad units."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got cores={cores}")
    memory, walltime = memory_bytes(memory, default_unit="M"), format_time(walltime)
    prologue = [f"export {name}={value}" for name, value in worker_environment(cores).items()]
    prologue += list(kwargs.pop("job_script_prologue", None) or [])
    kwargs.setdefault("death_timeout", WORKER_DEATH_TIMEOUT)
    return dict(
        cores=cores,
        processes=1,
        memory=memory,
        walltime=walltime,
        queue=queue,
        account=account,
        python=python or sys.executable,
        job_extra_directives=list(job_extra_directives or []),
        job_script_prologue=prologue,
        **kwargs,
    )


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
        raise TimeoutError(
            f"only {len(client.scheduler_info()['workers'])} of {n} dask workers joined in {timeout} s; "
            "check squeue for the worker jobs"
        ) from None
