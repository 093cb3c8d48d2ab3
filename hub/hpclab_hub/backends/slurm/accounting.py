"""SLURM's own account of a job (sacct), for the hub's history: on SLURM a server's life is what SLURM charged.

The hub closes a server's history row when it stops (ops/history.py) with its own clock and the profile's cores
and GPUs. For a SLURM job, the row is then settled from ``sacct``: the job's Start and End, its AllocCPUS (SLURM may
give more cores than asked, e.g. whole cores of two threads) and the GPUs of its AllocTRES, so that ``hpclab-hub
usage`` and the metrics match what the cluster's accounting bills. SLURM's accounting records the end a moment
after the job ends (slurmctld to slurmdbd): the hub asks again until sacct has it, and ``hpclab-hub usage`` settles
rows the hub did not (it stopped first, or sacct was down).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from hpclab_hub.backends.slurm.client import SlurmClient
from hpclab_hub.backends.slurm.errors import SlurmError
from hpclab_hub.ops import history

FIELDS = "JobID,Start,End,AllocCPUS,AllocTRES,State"
_GPUS = re.compile(r"(?:^|,)gres/gpu=(\d+)")


@dataclass(frozen=True)
class JobUsage:
    """What sacct says one job used."""

    job_id: str
    started: float
    ended: float
    cpus: int
    gpus: int
    state: str


def parse_sacct(text: str, job_id: str) -> JobUsage | None:
    """The job's allocation line of ``sacct -X -n -P --format=FIELDS`` with SLURM_TIME_FORMAT=%s; None while it has no
    end yet (still running, or the end not yet recorded) or if sacct does not list it."""
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 6 or parts[0] != job_id:
            continue
        _, start, end, cpus, tres, state = parts[:6]
        if not (start.isdigit() and end.isdigit()) or int(end) == 0 or state.split()[0] in ("RUNNING", "PENDING"):
            return None
        found = _GPUS.search(tres)
        return JobUsage(job_id, float(start), float(end), int(cpus or 0), int(found[1]) if found else 0, state.split()[0])
    return None


async def job_usage(client: SlurmClient, job_id: str) -> JobUsage | None:
    """sacct's record of ``job_id`` (run as the hub: root, or an operator sees every job), None if it has no end yet."""
    argv = [client.command("sacct"), "-X", "-n", "-P", "-j", job_id, f"--format={FIELDS}"]
    out = await client.run(argv, env=client.command_env({"SLURM_TIME_FORMAT": "%s"}))
    return parse_sacct(out, job_id)


async def settle(client: SlurmClient, engine: Any, row_id: int, job_id: str, log: Any, wait: float = 120) -> bool:
    """Ask sacct until it has the job's end (at most ``wait`` seconds), then write SLURM's numbers into the row."""
    deadline = time.monotonic() + wait
    while True:
        try:
            found = await job_usage(client, job_id)
        except (SlurmError, OSError) as error:  # SLURM's words, or no sacct on this host
            log.warning("History: sacct for job %s: %s", job_id, error)
            found = None
        if found is not None:
            with engine.begin() as connection:
                history.record_accounted(connection, row_id, found.started, found.ended, found.cpus, found.gpus)
            log.info("History: job %s settled from sacct (%d CPUs, %.0f s)", job_id, found.cpus, found.ended - found.started)
            return True
        if time.monotonic() >= deadline:
            log.warning("History: sacct has no end for job %s yet; hpclab-hub usage settles it later", job_id)
            return False
        await asyncio.sleep(2)


async def settle_all(deployment: Any, engine: Any, log: Any) -> int:
    """Settle every ended SLURM row not yet settled (``hpclab-hub usage``); the number settled."""
    slurm = {name: b for name, b in deployment.backends.items() if b.type == "slurm"}
    with engine.connect() as connection:
        rows = history.unsettled(connection, slurm)
    done = 0
    for row_id, backend, job_id in rows:
        settings = slurm[backend]
        if await settle(SlurmClient.for_backend(settings), engine, row_id, job_id, log, wait=0):
            done += 1
    return done
