"""The same training run as a SLURM job: ``srun`` one task per GPU (or core), and its log followed."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..slurm import JobSpec, format_time, is_finished, sbatch_memory, submit
from ..slurm import job_state as _job_state
from .config import TrainConfig

SLURM_LAUNCHERS = ("srun", "horovodrun")


def _slurm_memory(value: Any) -> str | None:
    """A memory amount in sbatch's syntax (``16G`` stays; bytes become whole MiB)."""
    return None if value is None or value == "" else sbatch_memory(value)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


@dataclass
class SlurmResources:
    """Nodes × tasks of a training job. One task (rank) per GPU; ``gpus_per_node=0`` trains on CPUs."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # default: gpus_per_node, or 1 without GPUs
    cpus_per_task: int | None = None
    mem: str | None = None  # per node, sbatch syntax (64G)
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpu_type: str | None = None  # typed GRES: --gres=gpu:a100:4
    extra_sbatch: list[str] = field(default_factory=list)  # e.g. ["--exclusive"]
    setup: list[str] = field(default_factory=list)  # shell lines before srun (module load ...)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 0 or (self.tasks_per_node is not None and self.tasks_per_node < 1):
            raise ValueError("nodes and tasks_per_node must be >= 1, gpus_per_node >= 0")

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node or self.gpus_per_node or 1

    @property
    def ntasks(self) -> int:
        return self.nodes * self.ntasks_per_node

    @classmethod
    def from_profile(cls, profile: Any, nodes: int = 1, **overrides: Any) -> SlurmResources:
        """Resources from an hpclab-hub profile (the dict in hub.yaml or the loaded Profile): per node,
        its GPUs (one task each), its cores split among the tasks, its memory, wall time and SLURM settings."""
        gpus = int(_get(profile, "gpus", 0) or 0)
        tasks = overrides.get("tasks_per_node") or gpus or 1
        slurm = _get(profile, "slurm")
        values: dict[str, Any] = {
            "nodes": nodes,
            "gpus_per_node": gpus,
            "cpus_per_task": max(1, int(_get(profile, "cpus", 1) or 1) // tasks),
            "mem": _slurm_memory(_get(profile, "memory")),
            "partition": _get(slurm, "partition"),
            "account": _get(slurm, "account"),
            "qos": _get(slurm, "qos"),
            "constraint": _get(slurm, "constraint"),
            "gpu_type": _get(slurm, "gpu_type"),
            "extra_sbatch": list(_get(slurm, "extra_sbatch", []) or []),
            "setup": list(_get(slurm, "setup", []) or []),
        }
        if _get(profile, "time_limit"):
            values["time"] = format_time(_get(profile, "time_limit"))
        values.update(overrides)
        return cls(**values)


def sbatch_script(
    cfg: TrainConfig,
    resources: SlurmResources,
    *,
    python: str | None = None,
    launcher: str = "srun",
    backend: str | None = None,
    job_name: str = "hpclab-train",
    output: str | None = None,
    workdir: str | None = None,
    srun_args: list[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The batch script for ``cfg`` on ``resources`` (a pure function; paths are made absolute).

    launcher "srun": one task per rank; ranks read SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID
    (backend ddp, the default; backend horovod: rank 0 runs Horovod's gloo rendezvous, no ssh between nodes).
    launcher "horovodrun": one horovodrun on the first node starts every rank with gloo
    (backend horovod; nodes beyond the first are reached over ssh, as horovodrun does).
    """
    if launcher not in SLURM_LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(SLURM_LAUNCHERS)}; got {launcher!r}")
    backend = backend or ("horovod" if launcher == "horovodrun" else "ddp")
    if launcher == "horovodrun" and backend != "horovod":
        raise ValueError("launcher 'horovodrun' runs backend 'horovod'")
    if backend not in ("ddp", "horovod"):
        raise ValueError(f"backend must be ddp or horovod; got {backend!r}")
    python = python or sys.executable
    out_dir = os.path.abspath(cfg.out_dir)
    cfg = cfg.replace(out_dir=out_dir, backend=backend, progress="log" if cfg.progress in ("auto", "bar") else cfg.progress)
    r = resources
    spec = JobSpec(
        job_name=job_name,
        chdir=os.path.abspath(workdir or out_dir),
        output=output or os.path.join(out_dir, "slurm-%j.out"),
        nodes=r.nodes,
        ntasks_per_node=r.ntasks_per_node,
        cpus_per_task=r.cpus_per_task or None,
        partition=r.partition,
        account=r.account,
        qos=r.qos,
        mem=r.mem,
        gpus=r.gpus_per_node,
        gpu_type=r.gpu_type,
        time=r.time,
        constraint=r.constraint,
        extra=tuple(r.extra_sbatch),
    )
    lines = spec.header()
    lines += ["set -euo pipefail", *r.setup]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    lines += [
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        "export PYTHONUNBUFFERED=1",
        'echo "hpclab-train: job $SLURM_JOB_ID, $SLURM_NTASKS tasks on $SLURM_JOB_NODELIST"',
    ]
    train = " ".join(shlex.quote(a) for a in [python, "-m", "hpclab.training", *cfg.to_argv()])
    if launcher == "srun":
        srun = ["srun", "--kill-on-bad-exit=1", *(srun_args or [])]
        lines.append(" ".join(shlex.quote(a) for a in srun) + " " + train)
    else:
        horovodrun = shlex.quote(str(Path(python).parent / "horovodrun"))
        lines += [
            'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/:$SLURM_NTASKS_PER_NODE/" | paste -sd, -)',
            f'{horovodrun} -np "$SLURM_NTASKS" -H "$HOSTS" --gloo {train}',
        ]
    return "\n".join(lines) + "\n"


@dataclass
class SlurmJob:
    """A submitted training job."""

    job_id: str
    script: Path
    output: Path
    out_dir: Path
    state: str | None = None
    exit_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code in (None, "0:0")


def _slurm_env(env: Mapping[str, str] | None) -> dict[str, str]:
    return dict(os.environ if env is None else env)


def submit_slurm(
    cfg: TrainConfig,
    resources: SlurmResources,
    *,
    python: str | None = None,
    launcher: str = "srun",
    backend: str | None = None,
    job_name: str = "hpclab-train",
    env: Mapping[str, str] | None = None,
    sbatch: str = "sbatch",
    **script_options: Any,
) -> SlurmJob:
    """Write ``out_dir/job.sbatch`` and submit it; returns the SlurmJob (see ``follow_slurm``).

    ``env`` is the environment of the sbatch call (SLURM_CONF and the like), default this one.
    """
    out_dir = Path(os.path.abspath(cfg.out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    text = sbatch_script(cfg, resources, python=python, launcher=launcher, backend=backend, job_name=job_name, **script_options)
    script = out_dir / "job.sbatch"
    script.write_text(text)
    job_id = submit(script, env=_slurm_env(env), sbatch=sbatch)
    output = script_options.get("output") or os.path.join(out_dir, "slurm-%j.out")
    return SlurmJob(job_id, script, Path(output.replace("%j", job_id)), out_dir)


def job_state(job_id: str, env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(state, exit code) of a job from ``scontrol show job -o`` (None, None when SLURM no longer knows it)."""
    return _job_state(job_id, env=_slurm_env(env))


def follow_slurm(
    job: SlurmJob,
    *,
    echo: Callable[[str], None] | None = print,
    poll_seconds: float = 1.0,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> SlurmJob:
    """Print the job's log as it grows until the job ends; returns the job with its final state.

    Raises TimeoutError after ``timeout`` seconds (the job keeps running; ``scancel`` it if unwanted).
    """
    started = time.monotonic()
    offset, partial = 0, ""

    def read_new() -> None:
        nonlocal offset, partial
        if not job.output.exists():
            return
        with open(job.output, errors="replace") as fh:
            fh.seek(offset)
            chunk = fh.read()
            offset = fh.tell()
        lines = (partial + chunk).split("\n")
        partial = lines.pop()
        if echo is not None:
            for line in lines:
                echo(line)

    while True:
        read_new()
        state, code = job_state(job.job_id, env)
        if state is None or is_finished(state):
            break
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"job {job.job_id} still {state} after {timeout} s")
        time.sleep(poll_seconds)
    time.sleep(min(poll_seconds, 0.5))  # the last lines may land just after the state changes
    read_new()
    if partial and echo is not None:
        echo(partial)
    job.state, job.exit_code = state, code
    return job
