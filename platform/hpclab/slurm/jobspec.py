"""A SLURM job's request as data: the one place in HPCLab that writes ``#SBATCH`` lines."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from .units import format_time, sbatch_memory


@dataclass(frozen=True)
class JobSpec:
    """What one batch job asks SLURM for; ``directives()`` writes it as sbatch options in a fixed order.

    Memory is bytes or a size (``4G``); time is seconds, a timedelta or a SLURM duration. Options
    left at None are not written (SLURM's defaults apply).
    """

    job_name: str
    output: str | None = None
    chdir: str | None = None
    comment: str | None = None
    nodes: int | None = None
    ntasks: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    array: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    mem: int | str | None = None
    gpus: int = 0
    gpu_type: str | None = None
    time: int | str | None = None
    signal: str | None = None
    constraint: str | None = None
    extra: Sequence[str] = field(default_factory=tuple)

    def directives(self) -> list[str]:
        """The sbatch options (``--cpus-per-task=2``, ...): identity, placement, resources, extras."""
        options = [f"--job-name={self.job_name}"]
        for name in (
            "comment",
            "chdir",
            "output",
            "array",
            "nodes",
            "ntasks",
            "ntasks_per_node",
            "cpus_per_task",
            "partition",
            "account",
            "qos",
            "reservation",
        ):
            value = getattr(self, name)
            if value is not None and value != "":
                options.append(f"--{name.replace('_', '-')}={value}")
        if self.mem is not None and self.mem != "":
            options.append(f"--mem={sbatch_memory(self.mem)}")
        if self.gpus:
            options.append(f"--gres=gpu:{self.gpu_type + ':' if self.gpu_type else ''}{self.gpus}")
        if self.time is not None and self.time != "":
            options.append(f"--time={format_time(self.time)}")
            if self.signal:
                options.append(f"--signal={self.signal}")
        if self.constraint:
            options.append(f"--constraint={self.constraint}")
        options.extend(self.extra)
        return options

    def header(self, shell: str = "#!/bin/bash") -> list[str]:
        """The script's first lines: the shebang and one ``#SBATCH`` line per option."""
        return [shell] + [f"#SBATCH {option}" for option in self.directives()]

    def script(self, body: Sequence[str | Sequence[str]], shell: str = "#!/bin/bash") -> str:
        """The whole batch script: header, then ``body`` (a list is shell-quoted word by word, a string kept)."""
        lines = self.header(shell)
        lines += [line if isinstance(line, str) else shlex.join([str(word) for word in line]) for line in body]
        return "\n".join(lines) + "\n"
