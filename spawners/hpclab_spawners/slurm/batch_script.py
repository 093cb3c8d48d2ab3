"""Build the batch script for a profile: a pure function, so tests can check it line by line."""

from __future__ import annotations

import shlex

from hpclab.walltime_signal import EARLY_SIGNAL

from ..config.model import Profile, SlurmBackend
from ..config.units import format_duration

JOB_NAME_PREFIX = "hpclab"
_EARLY_SIGNAL_NAME = EARLY_SIGNAL.name.removeprefix("SIG")  # USR2: what hpclab.walltime listens for


def job_name(username: str, server_name: str = "") -> str:
    """The job name that tags a job as this hub's: ``hpclab-<user>[-<server>]``."""
    return f"{JOB_NAME_PREFIX}-{username}" + (f"-{server_name}" if server_name else "")


def sbatch_options(
    profile: Profile,
    backend: SlurmBackend,
    username: str,
    home: str,
    server_name: str = "",
    hub_id: str = "",
    signal_before: int = 0,
) -> list[str]:
    """The ``#SBATCH`` options, in a fixed order: identity, placement, resources, extras.

    With a time limit and ``signal_before`` seconds, SLURM sends SIGUSR2 to the server that long before
    the limit (``--signal=B:USR2@N``): hpclab.walltime tells JupyterLab to save every open document.
    """
    slurm = profile.slurm
    pick = lambda key: (getattr(slurm, key, None) if slurm else None) or getattr(backend, key, None)  # noqa: E731
    options = [
        f"--job-name={job_name(username, server_name)}",
        f"--comment=hpclab:{hub_id}:{profile.slug}",
        f"--chdir={home}",
        f"--output={backend.output.format(home=home, username=username)}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={profile.cpus}",
    ]
    if pick("partition"):
        options.append(f"--partition={pick('partition')}")
    if pick("account"):
        options.append(f"--account={pick('account')}")
    if pick("qos"):
        options.append(f"--qos={pick('qos')}")
    if slurm and slurm.reservation:
        options.append(f"--reservation={slurm.reservation}")
    if profile.memory:
        options.append(f"--mem={max(1, profile.memory // 2**20)}M")
    if profile.gpus:
        gpu_type = f"{slurm.gpu_type}:" if slurm and slurm.gpu_type else ""
        options.append(f"--gres=gpu:{gpu_type}{profile.gpus}")
    if profile.time_limit:
        options.append(f"--time={format_duration(profile.time_limit)}")
        if signal_before:
            options.append(f"--signal=B:{_EARLY_SIGNAL_NAME}@{signal_before}")
    if slurm and slurm.constraint:
        options.append(f"--constraint={slurm.constraint}")
    options.extend(slurm.extra_sbatch if slurm else [])
    return options


def build_batch_script(
    profile: Profile,
    backend: SlurmBackend,
    username: str,
    home: str,
    command: list[str],
    server_name: str = "",
    hub_id: str = "",
    signal_before: int = 0,
) -> str:
    """The whole script: #SBATCH lines, set-up lines, then exec of the server command. Holds no secret."""
    lines = ["#!/bin/bash -l"]
    lines += [f"#SBATCH {option}" for option in sbatch_options(profile, backend, username, home, server_name, hub_id, signal_before)]
    lines += ["", "set -e", "unset XDG_RUNTIME_DIR"]
    setup = list(backend.setup) + (list(profile.slurm.setup) if profile.slurm else [])
    if setup:
        lines += ["# environment set-up (deploy YAML: backends.*.setup, profiles[].slurm.setup)", *setup]
    if signal_before and profile.time_limit:
        # SLURM's early signal may come before the server can handle it: ignored until it installs its handler
        lines += [f"trap '' {_EARLY_SIGNAL_NAME}"]
    lines += ["", "exec " + " ".join(shlex.quote(part) for part in command), ""]
    return "\n".join(lines)
