"""The ``hpclab`` command line.

Subcommands live in their own modules, listed in SUBCOMMANDS and imported only when that subcommand
runs: ``hpclab session`` never loads the science packages. Every subcommand's ``add_parser`` sets
``run`` on the arguments, and ``main`` calls it with SIGTERM/SIGINT turned into exceptions (so
clean-up runs and worker pools stop); an error no subcommand caught is printed as one line naming
the file or value (``--debug`` anywhere on the line shows the traceback instead). A subcommand
that catches an error to word it itself goes through ``report_error``, which raises it again under
``--debug``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
from collections.abc import Sequence
from typing import Any

from . import __version__

#: subcommand -> (module with ``add_parser(subparsers)``, one-line help for ``hpclab --help``)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "session": ("hpclab.cli", "show the cores, memory, GPUs and time this process may use"),
    "josephson": ("hpclab.josephson.cli", "φ0 Josephson junction: magnetisation reversal maps"),
    "mri": ("hpclab.mri.cli", "MRI pipeline: DICOM -> NIfTI, processing, segstats, cohorts"),
    "train": ("hpclab.training.cli", "data-parallel training (Horovod or torch.distributed)"),
}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, _dt.timedelta):
        return int(obj.total_seconds())
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _run_session(args: argparse.Namespace) -> int:
    from .session import session

    s = session()
    print(json.dumps(s.as_dict(), default=_json_default, indent=2) if args.json else s)
    return 0


def add_parser(sub: Any) -> None:
    """``hpclab session [--json]``."""
    p_session = sub.add_parser("session", help=SUBCOMMANDS["session"][1])
    p_session.add_argument("--json", action="store_true", help="print JSON (walltime_left in seconds)")
    p_session.set_defaults(run=_run_session)


def _build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser with every subcommand listed, and only ``command``'s own parser imported and built."""
    parser = argparse.ArgumentParser(prog="hpclab", description="HPCLab command line tools.")
    parser.add_argument("--version", action="version", version=f"hpclab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (accepted anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, text) in SUBCOMMANDS.items():
        if name == command:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=text, add_help=False)  # listed in --help; not imported
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if it is one of ours."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def report_error(args: argparse.Namespace, exc: BaseException, message: str, status: int) -> int:
    """A subcommand's caught error: raised again under ``--debug`` (``main`` prints the traceback), else
    ``message`` on stderr and ``status`` returned. The one place subcommands ask for ``--debug``."""
    import sys

    if getattr(args, "debug", False):
        raise exc
    print(message, file=sys.stderr)
    return status


def one_line(exc: BaseException) -> str:
    """An exception as one line: the file and the reason for OS errors, the message otherwise."""
    if isinstance(exc, MemoryError):
        return "out of memory: ask for less (fewer points, smaller windows) or a job with more memory"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


#: the -W option that keeps loky's resource tracker from warning about what it cleans up itself (see main)
QUIET_RESOURCE_TRACKER = "ignore:resource_tracker:UserWarning"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hpclab`` command line with *argv* (default: sys.argv[1:]); return the exit status."""
    import os
    import sys

    from .interrupts import Interrupted, signals_raise, stop_worker_pools

    argv = list(sys.argv[1:] if argv is None else argv)
    # loky's resource tracker, a process of its own started with this one's -W options, warns at its exit of the
    # semaphores of workers a stopped command killed, and removes them itself: noise after "stopped by SIGTERM"
    if QUIET_RESOURCE_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_RESOURCE_TRACKER)
    debug = "--debug" in argv or bool(os.environ.get("HPCLAB_DEBUG"))
    argv = [word for word in argv if word != "--debug"]
    parser = _build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    args.debug = debug  # for report_error: subcommands' own one-line errors are raised under --debug
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        with signals_raise():
            return args.run(args)
    except Interrupted as stop:
        print(f"hpclab {args.command}: stopped by {stop}", file=sys.stderr)
        return stop.exit_status
    except Exception as exc:
        if debug:
            raise
        print(f"hpclab {args.command}: error: {one_line(exc)} (--debug shows where)", file=sys.stderr)
        return 1
    finally:
        stop_worker_pools()
