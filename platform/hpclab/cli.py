"""The ``hpclab`` command line."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from collections.abc import Sequence
from typing import Any

from . import __version__
from .josephson.cli import add_parser as _add_josephson_parser
from .mri import cli as _mri_cli
from .session import session
from .training import cli as _train_cli


def _json_default(obj: Any) -> Any:
    if isinstance(obj, _dt.timedelta):
        return int(obj.total_seconds())
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpclab", description="HPCLab command line tools.")
    parser.add_argument("--version", action="version", version=f"hpclab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_session = sub.add_parser("session", help="show the cores, memory, GPUs and time this process may use")
    p_session.add_argument("--json", action="store_true", help="print JSON (walltime_left in seconds)")
    _add_josephson_parser(sub)
    _mri_cli.add_parser(sub)
    _train_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hpclab`` command line with *argv* (default: sys.argv[1:]); return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "session":
        s = session()
        if args.json:
            print(json.dumps(s.as_dict(), default=_json_default, indent=2))
        else:
            print(s)
        return 0
    if args.command == "josephson":
        return args.run(args)
    if args.command == "mri":
        return _mri_cli.run(args)
    if args.command == "train":
        return args.run(args)
    parser.print_help()
    return 2
