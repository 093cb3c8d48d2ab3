"""``hpclab josephson sweep``: a reversal map from the command line, for batch jobs.

Only argparse is imported here; numpy, numba and dask load when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NamedTuple

from ..slurm.flags import add_slurm_flags

#: flag -> JunctionParams field; every model parameter has one
_PARAM_FLAGS = {
    "--G": "G", "--r": "r", "--alpha": "alpha", "--w": "w", "--A-s": "A_s", "--t-s": "t_s",
    "--dt": "delta_t", "--t-end": "t_end",
}
_HELP = {
    "G": "Josephson to magnetic anisotropy energy ratio", "r": "spin-orbit coupling", "alpha": "Gilbert damping",
    "w": "phase-equation constant (w = 1 in the seed)", "A_s": "pulse amplitude (units of I_c)",
    "t_s": "pulse centre", "delta_t": "pulse width Δt", "t_end": "end of the simulation",
}


class Linspace(NamedTuple):
    """An axis given as start:stop:count, expanded with numpy.linspace (stop included)."""

    start: float
    stop: float
    count: int


def axis_or_value(text: str) -> float | list[float] | Linspace:
    """Parse "start:stop:count" (inclusive, like numpy.linspace), "v1,v2,..." or a single number."""
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            axis = Linspace(float(start), float(stop), int(count))
            if axis.count < 1:
                raise argparse.ArgumentTypeError(f"{text!r}: count must be >= 1")
            return axis
        if "," in text:
            return [float(v) for v in text.split(",") if v.strip()]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number, a list v1,v2,... or an axis start:stop:count"
        ) from None


class _ParamAction(argparse.Action):
    """Store a model parameter and remember the order the flags came in (the axis order)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        order = [n for n in getattr(namespace, "param_order", []) if n != self.dest]
        namespace.param_order = [*order, self.dest]


def add_parser(sub: Any) -> None:
    """Add the ``josephson`` command (with its ``sweep`` subcommand) to an argparse subparsers object."""
    p = sub.add_parser("josephson", help="φ0 Josephson junction: magnetisation reversal maps")

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(run=usage)
    jsub = p.add_subparsers(dest="josephson_command", metavar="COMMAND")
    s = jsub.add_parser(
        "sweep", help="compute a reversal map over a parameter grid and save it as .npz",
        description="Each model parameter takes a value, a list v1,v2,... or an axis start:stop:count "
        "(inclusive, like numpy.linspace); axes are swept in the order given.",
    )
    for flag, name in _PARAM_FLAGS.items():
        s.add_argument(flag, dest=name, type=axis_or_value, action=_ParamAction, metavar="V|A:B:N", help=_HELP[name])
    s.add_argument("--delta-t", dest="delta_t", type=axis_or_value, action=_ParamAction, metavar="V|A:B:N",
                   help="same as --dt")
    s.add_argument("--solver", choices=("fast", "reference", "seed"), default="fast",
                   help="fast: numba DOP853 (default); reference: solve_ivp DOP853, tight; seed: solve_ivp RK45")
    s.add_argument("--rtol", type=float, help="relative tolerance (default depends on --solver)")
    s.add_argument("--atol", type=float, help="absolute tolerance (default depends on --solver)")
    s.add_argument("--jobs", type=int, default=1, help="parallel workers, -1 for all (default 1)")
    s.add_argument("--backend", choices=("serial", "loky", "threading", "dask"),
                   help="default: serial for --jobs 1, else threads for the fast solver and loky processes for the others")
    s.add_argument("--chunk-size", type=int, help="points per task (default: about 4 tasks per worker)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask scheduler (implies --backend dask)")
    g = s.add_argument_group("SLURM (dask-jobqueue): start workers as SLURM jobs")
    g.add_argument("--slurm-jobs", type=int, metavar="N", help="number of worker jobs (implies --backend dask)")
    add_slurm_flags(
        g, ("partition", "time", "mem", "cpus", "account"),
        defaults={"time": "01:00:00", "mem": "2GiB", "cpus": 1},
        help_for={"time": "wall time per worker job", "mem": "memory per worker job", "cpus": "cores per worker job"},
        aliases={"--slurm-queue": "partition", "--slurm-walltime": "time", "--slurm-memory": "mem",
                 "--slurm-cores": "cpus", "--slurm-account": "account"},
    )
    g.add_argument("--slurm-timeout", type=float, default=300, help="seconds to wait for the workers (default 300)")
    s.add_argument("--out", required=True, help="output .npz (axes, mz_final, reversed, state, stats)")
    s.add_argument("--plot", metavar="PNG", help="also save the reversal map as an image")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=run_sweep, param_order=[])


def run_sweep(args: argparse.Namespace) -> int:
    """Run ``hpclab josephson sweep`` with parsed ``args``; print a one-line summary; return 0."""
    import numpy as np

    from .cluster import resolve_client, slurm_cluster, wait_for_workers
    from .sweep import sweep

    if args.scheduler and args.slurm_jobs:
        print("hpclab josephson sweep: use either --scheduler or --slurm-jobs, not both", file=sys.stderr)
        return 2
    if not str(args.out).endswith(".npz"):
        print(f"hpclab josephson sweep: --out must end in .npz, got {args.out!r}", file=sys.stderr)
        return 2
    # axes are swept in the order their flags were given
    values = {name: getattr(args, name) for name in dict.fromkeys(args.param_order)}
    values = {k: np.linspace(*v) if isinstance(v, Linspace) else v for k, v in values.items()}
    options: dict[str, Any] = dict(solver=args.solver, rtol=args.rtol, atol=args.atol, n_jobs=args.jobs,
                                   backend=args.backend, chunk_size=args.chunk_size, progress=not args.quiet)
    cluster = client = None
    try:
        if args.slurm_jobs:
            cluster = slurm_cluster(jobs=args.slurm_jobs, cores=args.cpus, memory=args.mem, walltime=args.time,
                                    queue=args.partition, account=args.account)
            client, _ = resolve_client(cluster)
            wait_for_workers(client, args.slurm_jobs, timeout=args.slurm_timeout)
            options.update(backend="dask", cluster=client, n_jobs=-1 if args.jobs == 1 else args.jobs)
        elif args.scheduler:
            options.update(backend="dask", cluster=args.scheduler, n_jobs=-1 if args.jobs == 1 else args.jobs)
        result = sweep(**options, **values)
    except (ValueError, TypeError) as err:
        print(f"hpclab josephson sweep: {err}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    result.save(args.out)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        ax = result.plot()
        ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
    print(f"{result.summary()} -> {args.out}")
    return 0
