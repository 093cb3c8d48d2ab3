"""``hpclab train resnet``: train here (one rank under horovodrun/torchrun/srun), on N local processes,
or as a SLURM job. torch is imported only when training starts in this process."""

from __future__ import annotations

import argparse
from typing import Any

from ..slurm.flags import add_slurm_flags
from .config import add_arguments, from_args


def add_parser(sub: Any) -> None:
    """Add ``train resnet`` to the ``hpclab`` sub-commands."""
    p_train = sub.add_parser("train", help="data-parallel training (Horovod or torch.distributed)")
    train_sub = p_train.add_subparsers(dest="train_command", metavar="MODEL")
    p = train_sub.add_parser(
        "resnet",
        help="train a torchvision ResNet (or other classifier) data-parallel",
        description="Train a torchvision classifier data-parallel. Without --nproc/--slurm this process is one "
        "rank: run it under `horovodrun -np N` or `torchrun --nproc-per-node N`, or alone.",
    )
    add_arguments(p)
    local = p.add_argument_group("start N processes on this machine")
    local.add_argument("--nproc", type=int, default=None, help="processes to start (horovodrun or torchrun)")
    local.add_argument(
        "--launcher",
        choices=("horovodrun", "torchrun"),
        default="horovodrun",
        help="with --nproc: horovodrun (backend horovod, gloo) or torchrun (backend ddp)",
    )
    slurm = p.add_argument_group("submit to SLURM and follow the log")
    slurm.add_argument("--slurm", action="store_true", help="submit a batch job (srun one task per GPU/core)")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--tasks-per-node", type=int, default=None, help="default: GPUs per node, or 1")
    slurm.add_argument("--cpus-per-task", type=int, default=None)
    add_slurm_flags(
        slurm,
        ("partition", "time", "mem", "gpus", "account"),
        defaults={"time": "01:00:00", "gpus": 0},
        help_for={"mem": "memory per node (sbatch syntax, e.g. 64G)", "gpus": "GPUs per node (one task each)"},
        aliases={"--gpus-per-node": "gpus"},
    )
    slurm.add_argument(
        "--slurm-launcher",
        choices=("srun", "horovodrun"),
        default="srun",
        help="srun (ranks from SLURM; backend ddp) or horovodrun inside the job (backend horovod)",
    )
    slurm.add_argument("--no-follow", dest="follow", action="store_false", help="submit and return")
    p.set_defaults(run=run)
    p_train.set_defaults(run=lambda args: (p_train.print_help(), 2)[1])


def run(args: argparse.Namespace) -> int:
    """Train as the flags say: here, on --nproc local processes or as a SLURM job; return the exit status.

    The output folder is checked before anything starts (a typo must not cost a queue wait). Errors
    are one line; with ``--debug`` (``args.debug``, set by :func:`hpclab.cli.main`) they are raised.
    """
    from ..cli import report_error
    from ..safe_output import OutputError, check_output_dir

    cfg = from_args(args)
    try:
        check_output_dir(cfg.out_dir)
    except OutputError as exc:
        return report_error(args, exc, f"hpclab train: --out-dir: {exc}", 2)
    if args.slurm:
        from .slurm import SlurmResources, follow_slurm, submit_slurm

        resources = SlurmResources(
            nodes=args.nodes,
            gpus_per_node=args.gpus,
            tasks_per_node=args.tasks_per_node,
            cpus_per_task=args.cpus_per_task,
            mem=args.mem,
            time=args.time,
            partition=args.partition,
            account=args.account,
        )
        backend = None if cfg.backend in ("auto", "none") else cfg.backend
        job = submit_slurm(cfg, resources, launcher=args.slurm_launcher, backend=backend)
        print(f"submitted job {job.job_id}: {resources.ntasks} tasks; log {job.output}", flush=True)
        if not args.follow:
            return 0
        job = follow_slurm(job, echo=lambda line: print(line, flush=True))
        print(f"job {job.job_id}: {job.state} (exit {job.exit_code})", flush=True)
        return 0 if job.ok else 1
    if args.nproc:
        from .launch import TrainingError, launch_local

        backend = "horovod" if args.launcher == "horovodrun" else "ddp"
        try:
            result = launch_local(cfg, nproc=args.nproc, backend=backend)
        except TrainingError as exc:
            return report_error(args, exc, str(exc), 1)
        print(f"done in {result.seconds:.1f} s: {result.out_dir}/metrics.json", flush=True)
        return 0
    from .trainer import train

    train(cfg)
    return 0
