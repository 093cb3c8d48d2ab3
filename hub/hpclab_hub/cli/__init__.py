"""``hpclab-hub``: check a deploy YAML, print its schema, start the hub, upgrade and back up its state, manage local
accounts and kernels.

One module per group of commands (check, run, reload, state, users, kernels); this one only parses the command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hpclab_hub.cli.common import DEFAULT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpclab-hub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a deploy YAML")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    check.add_argument("--live", action="store_true", help="also check SLURM profiles against the running cluster")
    check.set_defaults(handler="check:cmd_check")

    schema = sub.add_parser("schema", help="print the deploy YAML's JSON schema")
    schema.add_argument("--markdown", action="store_true", help="the admin reference in Markdown instead")
    schema.set_defaults(handler="check:cmd_schema")

    run = sub.add_parser("run", help="start JupyterHub from a deploy YAML")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("--port", type=int, default=None, help="public port (overrides hub.port)")
    run.add_argument(
        "--user",
        default=None,
        metavar="NAME",
        help="started as root: give hub.data_dir to NAME and run as NAME (SLURM-only YAMLs; refused where root is needed)",
    )
    run.set_defaults(handler="run:cmd_run")

    reload = sub.add_parser("reload", help="check a changed YAML, then the running hub takes it up; its servers keep running")
    reload.add_argument("--config", default=DEFAULT_CONFIG)
    reload.add_argument("--timeout", type=float, default=120, help="seconds to wait for the reloaded hub to answer")
    reload.set_defaults(handler="reload:cmd_reload")

    upgrade = sub.add_parser("upgrade", help="migrate the hub database to this release's schema (jupyterhub upgrade-db)")
    upgrade.add_argument("--config", default=DEFAULT_CONFIG)
    upgrade.set_defaults(handler="state:cmd_upgrade")

    backup = sub.add_parser("backup", help="copy the database, cookie secret, login guard, YAML and certificates to a folder")
    backup.add_argument("dest", help="folder to copy into (created, 0700)")
    backup.add_argument("--config", default=DEFAULT_CONFIG)
    backup.set_defaults(handler="state:cmd_backup")

    users = sub.add_parser("users", help="manage local accounts (auth.type: native)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="create or reset an approved account")
    add.add_argument("name")
    add.add_argument("--config", default=DEFAULT_CONFIG)
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(handler="users:cmd_users_add")

    usage = sub.add_parser("usage", help="sessions, core-hours and GPU-hours per group or user, from the hub's history")
    usage.add_argument("--config", default=DEFAULT_CONFIG)
    usage.add_argument("--since", default=None, help="start of the period: 2026-12-01 or 2026-12-01T09:00 (UTC; default: all)")
    usage.add_argument("--until", default=None, help="end of the period, same form (default: now)")
    usage.add_argument("--by", choices=("group", "user"), default="group", help="one row per group (default) or per user")
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    usage.set_defaults(handler="usage:cmd_usage")

    event = sub.add_parser("event", help="temporary accounts for a hackathon or tutorial (auth.type: native)")
    event_sub = event.add_subparsers(dest="event_command", required=True)
    create = event_sub.add_parser("create", help="NAME-1 ... NAME-N in group G until DATE; names and passwords as CSV")
    create.add_argument("name", help="the event's name, the accounts' prefix (e.g. school)")
    create.add_argument("--accounts", type=int, required=True, help="how many accounts (1-1000)")
    create.add_argument("--until", required=True, help="when the event ends: 2026-12-05T18:00 (UTC) or with an offset")
    create.add_argument("--group", required=True, help="the hub group the accounts join (name it in profiles' groups)")
    create.add_argument("--out", default=None, help="write the CSV to this file (0600) instead of stdout")
    create.add_argument("--config", default=DEFAULT_CONFIG)
    create.set_defaults(handler="event:cmd_event_create")

    kernels = sub.add_parser("kernels", help="curated kernels: install kernelspecs, list runtimes")
    kernels_sub = kernels.add_subparsers(dest="kernels_command", required=True)
    install = kernels_sub.add_parser("install", help="install the kernelspecs the YAML declares (those with a runtime)")
    install.add_argument("names", nargs="*", metavar="NAME", help="only these kernels (default: all)")
    install.add_argument("--config", default=DEFAULT_CONFIG)
    where = install.add_mutually_exclusive_group()
    where.add_argument("--prefix", default=None, help="install into PREFIX/share/jupyter/kernels (default: this Python's prefix)")
    where.add_argument("--user", action="store_true", help="install for the current user only")
    install.set_defaults(handler="kernels:cmd_kernels_install")
    listing = kernels_sub.add_parser("list", help="show each kernel's runtime, whether it is present, where it is installed")
    listing.add_argument("--config", default=DEFAULT_CONFIG)
    listing.add_argument("--prefix", default=None, help="also look for kernelspecs under PREFIX/share/jupyter/kernels")
    listing.set_defaults(handler="kernels:cmd_kernels_list")
    node = sub.add_parser("node-install", help="make a shared folder compute nodes run the server and kernels from")
    node.add_argument("prefix", metavar="PREFIX", help="the folder to make, e.g. /shared/hpclab (a venv)")
    node.add_argument("--config", default=None, help="also install this YAML's curated kernelspecs into PREFIX")
    node.add_argument("--lock", default=None, help="the lock file to install (default images/requirements/all.txt)")
    node.add_argument("--python", default=None, help="the Python to make the venv with (default: the hub's own base Python)")
    node.set_defaults(handler="node_install:cmd_node_install")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, function = args.handler.split(":")
    # deferred: a command's module is imported only when it runs (``check`` never loads JupyterHub)
    command = getattr(importlib.import_module(f"hpclab_hub.cli.{module}"), function)
    return int(command(args))


if __name__ == "__main__":
    sys.exit(main())
