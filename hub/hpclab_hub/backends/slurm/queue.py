"""One view of the queue for the whole hub: a batched, cached, jittered squeue shared by every spawner."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from hpclab_hub.backends.slurm.client import SlurmClient
from hpclab_hub.backends.slurm.errors import SlurmError
from hpclab_hub.backends.slurm.outputs import JobInfo


@dataclass(frozen=True)
class JobStatus:
    """What the hub knows of a job: ``known`` is False when SLURM could not be asked (never means 'gone')."""

    known: bool
    info: JobInfo | None = None  # None with known=True: SLURM no longer lists the job

    @property
    def gone(self) -> bool:
        """SLURM answered and does not list the job any more."""
        return self.known and self.info is None


class JobQueue:
    """Caches ``squeue -t all`` for ``max_age`` seconds; concurrent callers share one in-flight query."""

    def __init__(self, client: SlurmClient, max_age: float):
        self.client = client
        self.max_age = max_age
        self._jobs: dict[str, JobInfo] = {}
        self._fetched = 0.0
        self._jitter = 0.0
        self._ok = False
        self._inflight: asyncio.Task | None = None
        self.last_error = ""
        self.start_times: dict[str, str] = {}

    async def _fetch(self) -> None:
        try:
            self._jobs = await self.client.jobs()
            self._ok, self.last_error = True, ""
            pending = [j.job_id for j in self._jobs.values() if j.state == "PENDING" and j.name.startswith("hpclab-")]
            self.start_times = await self.client.start_times(pending) if pending else {}
        except SlurmError as error:
            self._ok, self.last_error = False, error.message
        # jitter: spread the next refresh so many hubs do not hit slurmctld in lock-step; later, never earlier, than
        # the poll interval, so that there is at most one listing per interval (issue 28's load benchmark)
        self._fetched, self._jitter = time.monotonic(), random.uniform(0, 0.2 * self.max_age)

    async def refresh(self, max_age: float | None = None) -> None:
        """Make the cache at most ``max_age`` old (default: the poll interval), with at most one squeue in flight."""
        limit = self.max_age + self._jitter if max_age is None else max_age
        if time.monotonic() - self._fetched <= limit and self._inflight is None:
            return
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(lambda _: setattr(self, "_inflight", None))
        await asyncio.shield(self._inflight)

    async def status(self, job_id: str, max_age: float | None = None) -> JobStatus:
        """The job's status from a fresh-enough snapshot."""
        await self.refresh(max_age)
        if not self._ok:
            return JobStatus(known=False)
        return JobStatus(known=True, info=self._jobs.get(job_id))

    def snapshot(self) -> dict[str, JobInfo]:
        """The last successful snapshot (for orphan checks and metrics)."""
        return dict(self._jobs) if self._ok else {}


_QUEUES: dict[tuple, JobQueue] = {}


def queue_for(client: SlurmClient, max_age: float) -> JobQueue:
    """The hub-wide queue view for one SLURM configuration."""
    key = (client.slurm_conf, max_age)
    if key not in _QUEUES:
        _QUEUES[key] = JobQueue(client, max_age)
    return _QUEUES[key]
