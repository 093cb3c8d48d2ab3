"""SLURM jobs for MRI work: what a job asks for, and its batch script, on hpclab.slurm's JobSpec."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..slurm import JobSpec, job_states, submit, wait  # noqa: F401 (the MRI modules submit and wait through these)


@dataclass(frozen=True)
class JobResources:
    """What one SLURM job (or array task) asks for."""

    cpus: int = 1
    mem: str = "4G"
    time: str = "02:00:00"
    partition: str | None = None
    account: str | None = None


def batch_script(
    commands: Sequence[Sequence[str] | str],
    *,
    job_name: str,
    log_dir: str | Path,
    resources: JobResources = JobResources(),
    array: str | None = None,
    modules: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """A bash batch script: the job's header, ``module load`` lines, exports, then ``commands``.

    A command given as a list is shell-quoted word by word; a string is used as it is (so it
    may refer to ``$SLURM_ARRAY_TASK_ID``). ``array`` is sbatch's ``--array`` value, e.g. ``0-7%2``.
    """
    spec = JobSpec(
        job_name=job_name,
        output=str(Path(log_dir) / ("%x-%A_%a.out" if array else "%x-%j.out")),
        array=array,
        cpus_per_task=resources.cpus,
        mem=resources.mem,
        time=resources.time,
        partition=resources.partition,
        account=resources.account,
    )
    body: list[str | Sequence[str]] = [
        "set -euo pipefail",
        *(f"module load {shlex.quote(m)}" for m in modules),
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
    ]
    body += [f"export {key}={shlex.quote(str(value))}" for key, value in (env or {}).items()]
    return spec.script([*body, *commands])
