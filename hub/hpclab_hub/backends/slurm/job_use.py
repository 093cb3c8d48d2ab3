"""What running SLURM servers use now, as SLURM measures it: one ``sstat`` for all of them per refresh.

SLURM's job accounting (``JobAcctGatherType`` other than ``jobacct_gather/none``) samples each step's processes;
``sstat`` asks the nodes' step daemons for the running steps' figures, fresh at the time of asking. A server's job is
its batch step (JupyterLab and its kernels) plus any steps it started (``srun``): its CPU time and memory are their
sums. The admins' page asks for the hub's running jobs at once, at most once per poll interval (concurrent pages
share one call), as the queue view does for squeue (queue.py). sstat answers only root and SlurmUser for other
people's jobs: a hub with operator rights alone sees SLURM's refusal here instead of figures.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from hpclab.slurm.units import memory_bytes
from hpclab_hub.backends.slurm.client import SlurmClient
from hpclab_hub.backends.slurm.errors import SlurmError

#: ``-a``: every step of the jobs asked (without it, 22.05 lists none of a batch job's)
FIELDS = "JobID,TRESUsageInTot,MaxRSS"
_TRES_CPU = re.compile(r"(?:^|,)cpu=([^,]+)")
_TRES_MEM = re.compile(r"(?:^|,)mem=([^,]+)")
_ERROR_JOB = re.compile(r"(?:[Jj]ob |StepId=)(\d+)")


@dataclass(frozen=True)
class JobUse:
    """A running job's use, summed over its steps: CPU seconds so far, memory in use now and its peak (bytes)."""

    job_id: str
    cpu_seconds: float
    memory: int
    peak_memory: int
    measured_at: float  # time.monotonic() of the sstat call


def elapsed_seconds(text: str) -> float:
    """Seconds in an elapsed time as sstat prints it: ``[D-][HH:]MM:SS[.mmm]``."""
    days, _, clock = text.strip().rpartition("-")
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total + (int(days) * 86400 if days else 0)


def _size(text: str) -> int:
    try:
        return memory_bytes(text.strip()) if text.strip() else 0
    except ValueError:
        return 0


def sstat_errors(text: str) -> dict[str, str]:
    """sstat's complaints by job id ('' for one that names no job): it exits 0 and says on stderr that a job has
    ended (``couldn't get steps for job 9``) or that it may not look at it (``Invalid user id``, for a hub that is not
    root or SlurmUser)."""
    errors: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("sstat: error:"):
            found = _ERROR_JOB.search(line)
            key = found[1] if found else ""
            errors[key] = errors.get(key) or line.removeprefix("sstat: error:").strip()
    return errors


def parse_sstat(text: str, measured_at: float = 0.0) -> dict[str, JobUse]:
    """Per job, from ``sstat -a -n -P --format=JobID,TRESUsageInTot,MaxRSS`` lines, one per step:
    ``42.batch|cpu=00:00:09,energy=0,...,mem=214420K,...|214420K``."""
    sums: dict[str, list[float]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id = parts[0].split(".")[0]
        cpu, mem = _TRES_CPU.search(parts[1]), _TRES_MEM.search(parts[1])
        try:
            seconds = elapsed_seconds(cpu[1]) if cpu else 0.0
        except ValueError:
            seconds = 0.0
        total = sums.setdefault(job_id, [0.0, 0, 0])
        total[0] += seconds
        total[1] += _size(mem[1]) if mem else 0
        total[2] += _size(parts[2])
    return {job: JobUse(job, cpu, int(mem), int(peak), measured_at) for job, (cpu, mem, peak) in sums.items()}


class JobUses:
    """The figures of the jobs last asked for, at most ``max_age`` old; concurrent callers share one sstat."""

    def __init__(self, client: SlurmClient, max_age: float):
        self.client = client
        self.max_age = max_age
        self._uses: dict[str, JobUse] = {}
        self.errors: dict[str, str] = {}  # sstat's words by job id, '' for the whole call
        self._asked: frozenset[str] = frozenset()
        self._fetched = 0.0
        self._inflight: asyncio.Task | None = None

    async def _fetch(self, job_ids: frozenset[str]) -> None:
        now = time.monotonic()
        argv = [self.client.command("sstat"), "-a", "-n", "-P", "-j", ",".join(sorted(job_ids, key=int)), f"--format={FIELDS}"]
        try:
            out = await self.client.run(argv, with_stderr=True)
            self._uses, self.errors = parse_sstat(out, now), sstat_errors(out)
        except SlurmError as error:  # SLURM not answering, or refusing the whole call
            self._uses, self.errors = {}, {"": error.message}
        self._asked, self._fetched = job_ids, now

    def error(self, job_id: str) -> str:
        """What sstat said of ``job_id`` (or of the whole call) at its last call; '' if nothing."""
        return self.errors.get(job_id) or self.errors.get("", "")

    async def uses(self, job_ids: set[str]) -> dict[str, JobUse]:
        """The use of each of ``job_ids`` (running jobs) that sstat reports: one sstat for all of them, unless the
        last one, at most ``max_age`` old, asked for them all already."""
        wanted = frozenset(j for j in job_ids if j.isdigit())
        if not wanted:
            return {}
        if self._inflight is None and (time.monotonic() - self._fetched > self.max_age or not wanted <= self._asked):
            self._inflight = asyncio.ensure_future(self._fetch(wanted))
            self._inflight.add_done_callback(lambda _: setattr(self, "_inflight", None))
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        return {j: use for j, use in self._uses.items() if j in wanted}


_USES: dict[tuple, JobUses] = {}


def uses_for(client: SlurmClient, max_age: float) -> JobUses:
    """The hub-wide view of running jobs' use for one SLURM configuration (as queue.queue_for)."""
    key = (client.slurm_conf, client.bin_dir, max_age)
    if key not in _USES:
        _USES[key] = JobUses(client, max_age)
    return _USES[key]
