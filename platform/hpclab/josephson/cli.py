"""``hpclab josephson sweep``: a reversal map from the command line, for batch jobs.

Only argparse is imported here; numpy, numba and dask load when a command runs.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

from ..slurm.flags import add_slurm_flags

#: flag -> JunctionParams field; every model parameter has one
_PARAM_FLAGS = {
    "--G": "G",
    "--r": "r",
    "--alpha": "alpha",
    "--w": "w",
    "--A-s": "A_s",
    "--t-s": "t_s",
    "--pulse-width": "delta_t",
    "--t-end": "t_end",
}
#: old spellings of --pulse-width; --dt reads like a time step, which it never was
_PULSE_WIDTH_ALIASES = ("--dt", "--delta-t")
#: an argument that starts with "-" but is a number, a list or an axis ("-1.5:1.5:3"), not an option
_NEGATIVE_VALUE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?([:,].*)?$")
_HELP = {
    "G": "Josephson to magnetic anisotropy energy ratio",
    "r": "spin-orbit coupling",
    "alpha": "Gilbert damping",
    "w": "phase-equation constant (w = 1 in the seed)",
    "A_s": "pulse amplitude (units of I_c)",
    "t_s": "pulse centre",
    "delta_t": "width Δt of the current pulse (a duration, not a time step)",
    "t_end": "end of the simulation",
}


class Linspace(NamedTuple):
    """An axis given as start:stop:count, expanded with numpy.linspace (stop included)."""

    start: float
    stop: float
    num: int  # numpy.linspace's name (a field `count` would hide tuple.count)


def axis_or_value(text: str) -> float | list[float] | Linspace:
    """Parse "start:stop:count" (inclusive, like numpy.linspace), "v1,v2,..." or a single number."""
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            axis = Linspace(float(start), float(stop), int(count))
            if axis.num < 1:
                raise argparse.ArgumentTypeError(f"{text!r}: count must be >= 1")
            return axis
        if "," in text:
            return [float(v) for v in text.split(",") if v.strip()]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, a list v1,v2,... or an axis start:stop:count") from None


class _ParamAction(argparse.Action):
    """Store a model parameter and remember the order the flags came in (the axis order)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        order = [n for n in getattr(namespace, "param_order", []) if n != self.dest]
        namespace.param_order = [*order, self.dest]


class _PulseWidthAlias(_ParamAction):
    """--dt / --delta-t: store like --pulse-width and say that it is the pulse width."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        print(
            f"hpclab josephson sweep: warning: {option_string} is the width of the current pulse, not a time "
            "step; it is deprecated, use --pulse-width",
            file=sys.stderr,
        )
        super().__call__(parser, namespace, values, option_string)


def add_parser(sub: Any) -> None:
    """Add the ``josephson`` command (with its ``sweep`` subcommand) to an argparse subparsers object."""
    p = sub.add_parser("josephson", help="φ0 Josephson junction: magnetisation reversal maps")

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(run=usage)
    jsub = p.add_subparsers(dest="josephson_command", metavar="COMMAND")
    s = jsub.add_parser(
        "sweep",
        help="compute a reversal map over a parameter grid and save it as .npz",
        description="Each model parameter takes a value, a list v1,v2,... or an axis start:stop:count "
        "(inclusive, like numpy.linspace); axes are swept in the order given.",
    )
    s._negative_number_matcher = _NEGATIVE_VALUE  # "--A-s -1.5:1.5:3" is a value, not an option
    for flag, name in _PARAM_FLAGS.items():
        s.add_argument(flag, dest=name, type=axis_or_value, action=_ParamAction, metavar="V|A:B:N", help=_HELP[name])
    s.add_argument(
        *_PULSE_WIDTH_ALIASES,
        dest="delta_t",
        type=axis_or_value,
        action=_PulseWidthAlias,
        metavar="V|A:B:N",
        help="deprecated spelling of --pulse-width",
    )
    s.add_argument(
        "--solver",
        choices=("fast", "reference", "seed"),
        default="fast",
        help="fast: numba DOP853 (default); reference: solve_ivp DOP853, tight; seed: solve_ivp RK45",
    )
    s.add_argument("--rtol", type=float, help="relative tolerance (default depends on --solver)")
    s.add_argument("--atol", type=float, help="absolute tolerance (default depends on --solver)")
    s.add_argument("--jobs", type=int, default=1, help="parallel workers, -1 for all (default 1)")
    s.add_argument(
        "--backend",
        choices=("serial", "loky", "threading", "dask"),
        help="default: serial for --jobs 1, else threads for the fast solver and loky processes for the others",
    )
    s.add_argument("--chunk-size", type=int, help="points per task (default: about 4 tasks per worker)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask scheduler (implies --backend dask)")
    g = s.add_argument_group("SLURM (dask-jobqueue): start workers as SLURM jobs")
    g.add_argument("--slurm-jobs", type=int, metavar="N", help="number of worker jobs (implies --backend dask)")
    add_slurm_flags(
        g,
        ("partition", "time", "mem", "cpus", "account"),
        defaults={"time": "01:00:00", "mem": "2GiB", "cpus": 1},
        help_for={"time": "wall time per worker job", "mem": "memory per worker job", "cpus": "cores per worker job"},
        aliases={
            "--slurm-queue": "partition",
            "--slurm-walltime": "time",
            "--slurm-memory": "mem",
            "--slurm-cores": "cpus",
            "--slurm-account": "account",
        },
    )
    g.add_argument("--slurm-timeout", type=float, default=300, help="seconds to wait for the workers (default 300)")
    s.add_argument("--out", required=True, help="output .npz (axes, mz_final, reversed, state, stats)")
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep from OUT's .partial.npz (same grid, solver, tolerances)",
    )
    s.add_argument("--plot", metavar="PNG", help="also save the reversal map as an image")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=run_sweep, param_order=[])


def partial_path(out: str | Path) -> Path:
    """Where a sweep writing ``out`` keeps its finished points until it completes: ``map.npz`` -> ``map.partial.npz``."""
    out = Path(out)
    return out.with_name(out.stem + ".partial.npz")


def _grid_points(values: dict[str, Any]) -> int:
    """Points of the grid the flags ask for, counted without building it."""
    counts = [v.num if isinstance(v, Linspace) else len(v) for v in values.values() if not isinstance(v, float)]
    return math.prod(counts)


def run_sweep(args: argparse.Namespace) -> int:
    """Run ``hpclab josephson sweep`` with parsed ``args``; print a one-line summary; return the exit status.

    Checks OUT (and --plot) and the memory the grid needs before computing; finished points go to
    OUT's .partial.npz as they come, so SIGTERM or Ctrl-C keeps them for ``--resume`` (also while
    OUT itself is written: the .partial.npz then holds every point). Errors are one line; with
    ``--debug`` (``args.debug``, set by :func:`hpclab.cli.main`) they are raised, so the traceback shows.
    """
    from ..cli import report_error
    from ..interrupts import Interrupted
    from ..safe_output import OutputError, check_output_file

    def fail(message: str, error: Exception | None = None) -> int:
        if error is not None:
            return report_error(args, error, f"hpclab josephson sweep: {message}", 2)
        print(f"hpclab josephson sweep: {message}", file=sys.stderr)
        return 2

    if args.scheduler and args.slurm_jobs:
        return fail("use either --scheduler or --slurm-jobs, not both")
    try:
        check_output_file(args.out, suffix=".npz")
        if args.plot:
            check_output_file(args.plot, suffix=".png")
    except OutputError as err:
        return fail(str(err), err)
    partial = partial_path(args.out)
    if partial.exists() and not args.resume:
        return fail(f"{partial} holds an interrupted sweep: add --resume to finish it, or remove the file")
    # axes are swept in the order their flags were given
    values = {name: getattr(args, name) for name in dict.fromkeys(args.param_order)}
    import numpy as np

    from .sweep import check_memory

    try:
        check_memory(_grid_points(values))
    except ValueError as err:
        return fail(str(err), err)
    values = {k: np.linspace(*v) if isinstance(v, Linspace) else v for k, v in values.items()}
    try:
        result = _sweep(args, values, partial)
        result.save(args.out)  # atomic: a signal here leaves the previous OUT, and the .partial.npz
    except (ValueError, TypeError) as err:
        return fail(str(err), err)
    except Interrupted as stop:
        from .checkpoint import finished_points

        kept = finished_points(partial)
        print(
            f"hpclab josephson sweep: stopped by {stop}; {kept} finished points kept in {partial}; "
            "run the same command with --resume to finish",
            file=sys.stderr,
        )
        return stop.exit_status
    partial.unlink(missing_ok=True)
    if args.plot:
        import matplotlib

        from ..safe_output import atomic_output

        matplotlib.use("Agg")
        ax = result.plot()
        with atomic_output(args.plot) as tmp:
            ax.figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    print(f"{result.summary()} -> {args.out}")
    return 0


def _sweep(args: argparse.Namespace, values: dict[str, Any], partial: Path) -> Any:
    """The sweep itself, on the backend the flags choose (a SLURM dask cluster is started and closed here)."""
    from .cluster import resolve_client, slurm_cluster, wait_for_workers
    from .sweep import sweep

    options: dict[str, Any] = dict(
        solver=args.solver,
        rtol=args.rtol,
        atol=args.atol,
        n_jobs=args.jobs,
        backend=args.backend,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
        checkpoint=partial,
        keep_checkpoint=True,
    )
    cluster = client = None
    try:
        if args.slurm_jobs:
            cluster = slurm_cluster(
                jobs=args.slurm_jobs,
                cores=args.cpus,
                memory=args.mem,
                walltime=args.time,
                queue=args.partition,
                account=args.account,
            )
            client, _ = resolve_client(cluster)
            wait_for_workers(client, args.slurm_jobs, timeout=args.slurm_timeout)
            options.update(backend="dask", cluster=client, n_jobs=-1 if args.jobs == 1 else args.jobs)
        elif args.scheduler:
            options.update(backend="dask", cluster=args.scheduler, n_jobs=-1 if args.jobs == 1 else args.jobs)
        return sweep(**options, **values)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
