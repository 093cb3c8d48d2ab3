"""Build the batch script for a profile: a pure function, so tests can check it line by line."""

from __future__ import annotations

import shlex

from hpclab.slurm import JobSpec
from hpclab.walltime_signal import EARLY_SIGNAL
from hpclab_hub.config.model import Profile, SlurmBackend

JOB_NAME_PREFIX = "hpclab"
_EARLY_SIGNAL_NAME = EARLY_SIGNAL.name.removeprefix("SIG")  # USR2: what hpclab.walltime listens for


def job_name(username: str, server_name: str = "") -> str:
    """The job name that tags a job as this hub's: ``hpclab-<user>[-<server>]``."""
    return f"{JOB_NAME_PREFIX}-{username}" + (f"-{server_name}" if server_name else "")


def job_spec(
    profile: Profile,
    backend: SlurmBackend,
    username: str,
    home: str,
    server_name: str = "",
    hub_id: str = "",
    signal_before: int = 0,
    group_qos: str | None = None,
    group_account: str | None = None,
) -> JobSpec:
    """The profile's job as hpclab.slurm's JobSpec: identity, placement, resources, extras.

    ``group_qos`` and ``group_account`` come from the person's groups (``priorities.slurm_qos``,
    ``priorities.slurm_account``): used where the profile names none, before the backend's own.

    With a time limit and ``signal_before`` seconds, SLURM sends SIGUSR2 to the server that long before
    the limit (``--signal=B:USR2@N``): hpclab.walltime tells JupyterLab to save every open document.
    """
    slurm = profile.slurm

    def pick(key: str) -> str | None:
        return (getattr(slurm, key, None) if slurm else None) or getattr(backend, key, None)

    return JobSpec(
        job_name=job_name(username, server_name),
        comment=f"hpclab:{hub_id}:{profile.slug}",
        chdir=home,
        output=backend.output.format(home=home, username=username),
        nodes=1,
        ntasks=1,
        cpus_per_task=profile.cpus,
        partition=pick("partition"),
        account=(slurm.account if slurm else None) or group_account or backend.account,
        qos=(slurm.qos if slurm else None) or group_qos or backend.qos,
        reservation=slurm.reservation if slurm else None,
        mem=profile.memory,
        gpus=profile.gpus,
        gpu_type=slurm.gpu_type if slurm else None,
        time=profile.time_limit,
        signal=f"B:{_EARLY_SIGNAL_NAME}@{signal_before}" if signal_before else None,
        constraint=slurm.constraint if slurm else None,
        extra=tuple(slurm.extra_sbatch) if slurm else (),
    )


def sbatch_options(
    profile: Profile,
    backend: SlurmBackend,
    username: str,
    home: str,
    server_name: str = "",
    hub_id: str = "",
    signal_before: int = 0,
) -> list[str]:
    """The job's sbatch options, in the order the script lists them."""
    return job_spec(profile, backend, username, home, server_name, hub_id, signal_before).directives()


def build_batch_script(
    profile: Profile,
    backend: SlurmBackend,
    username: str,
    home: str,
    command: list[str],
    server_name: str = "",
    hub_id: str = "",
    signal_before: int = 0,
    group_qos: str | None = None,
    group_account: str | None = None,
) -> str:
    """The whole script: the job's header, set-up lines, then exec of the server command. Holds no secret."""
    spec = job_spec(profile, backend, username, home, server_name, hub_id, signal_before, group_qos, group_account)
    lines = ["", "set -e", "unset XDG_RUNTIME_DIR"]
    setup = list(backend.setup) + (list(profile.slurm.setup) if profile.slurm else [])
    if setup:
        lines += ["# environment set-up (deploy YAML: backends.*.setup, profiles[].slurm.setup)", *setup]
    if signal_before and profile.time_limit:
        # SLURM's early signal may come before the server can handle it: ignored until it installs its handler
        lines += [f"trap '' {_EARLY_SIGNAL_NAME}"]
    lines += ["", "exec " + " ".join(shlex.quote(part) for part in command)]
    return spec.script(lines, shell="#!/bin/bash -l")
