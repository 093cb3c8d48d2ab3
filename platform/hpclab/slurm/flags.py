"""One set of SLURM flag names for every science CLI: --partition --time --mem --gpus --account (and --cpus).

Older per-command names (``--slurm-queue``, ``--slurm-walltime``, ``--gpus-per-node``, ...) still work
for one release: they fill the same option and print a deprecation note on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from typing import Any

#: flag -> help text; each command picks the ones that make sense for it.
FLAG_HELP = {
    "partition": "SLURM partition",
    "time": "wall time per job, SLURM syntax (HH:MM:SS, D-HH:MM)",
    "mem": "memory per job (4G, 512M)",
    "gpus": "GPUs per node",
    "cpus": "cores per job (task)",
    "account": "SLURM account to charge",
}


class DeprecatedAlias(argparse.Action):
    """An old flag name: stores into the new option's place and says which name to use from now on."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        print(
            f"{parser.prog}: {option_string} is deprecated and will be removed in the next release; use {self.replacement}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_slurm_flags(
    group: Any,
    names: Iterable[str],
    *,
    defaults: Mapping[str, Any] | None = None,
    types: Mapping[str, Any] | None = None,
    aliases: Mapping[str, str] | None = None,
    help_for: Mapping[str, str] | None = None,
) -> None:
    """Add ``--NAME`` for each of ``names`` (dest NAME) to an argparse parser or group.

    ``aliases`` maps an old flag (``--slurm-queue``) to the name it now means (``partition``).
    """
    defaults, types, help_for = dict(defaults or {}), dict(types or {}), dict(help_for or {})
    for name in names:
        default = defaults.get(name)
        text = help_for.get(name, FLAG_HELP[name]) + (f" (default {default})" if default is not None else "")
        group.add_argument(
            f"--{name}", dest=name, default=default, type=types.get(name, int if name in ("gpus", "cpus") else str), help=text
        )
    for old, name in (aliases or {}).items():
        group.add_argument(
            old,
            dest=name,
            action=DeprecatedAlias,
            replacement=f"--{name}",
            type=types.get(name, int if name in ("gpus", "cpus") else str),
            help=argparse.SUPPRESS,
        )
