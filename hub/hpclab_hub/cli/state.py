"""``hpclab-hub upgrade`` and ``hpclab-hub backup``: the hub's database migrated, its state copied."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.ops.db_schema import backup, upgrade


def cmd_upgrade(args: argparse.Namespace) -> int:
    """JupyterHub's database migration (``jupyterhub upgrade-db``) on the YAML's database, the hub stopped."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    logging.basicConfig(level=logging.INFO, format="hpclab-hub upgrade: %(message)s")
    pid_file = deployment.hub.data_dir / "jupyterhub.pid"
    if pid_file.exists() and pid_file.read_text().strip().isdigit() and Path(f"/proc/{pid_file.read_text().strip()}").exists():
        print(
            f"hpclab-hub: the hub is running (pid {pid_file.read_text().strip()}): stop it first (systemctl stop hpclab-hub).",
            file=sys.stderr,
        )
        return 1
    try:
        before, after = upgrade(deployment, logging.getLogger("hpclab.upgrade"))
    except ValueError as refused:
        print(f"hpclab-hub: not upgrading: {refused}", file=sys.stderr)
        return 1
    if before == after:
        print(f"hpclab-hub: the database is current (JupyterHub schema {after}); nothing to do.")
    else:
        print(
            f"hpclab-hub: database upgraded from JupyterHub schema {before or '(new)'} to {after}"
            + (" (the SQLite file was copied beside it first)" if deployment.hub.database_url.startswith("sqlite:") else "")
        )
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the database (SQLite), cookie secret, login guard, YAML and certificates into a folder (docs: Backups)."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    copied = backup(deployment, Path(args.config), Path(args.dest))
    print(f"hpclab-hub: backed up to {args.dest}: {', '.join(copied)}")
    if not deployment.hub.database_url.startswith("sqlite:"):
        print("hpclab-hub: the database is not SQLite: back it up with its own tool (pg_dump) as well.", file=sys.stderr)
    return 0
