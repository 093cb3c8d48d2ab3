"""``hpclab-hub``: check a deploy YAML, print its schema, start the hub, upgrade and back up its state, manage local accounts and kernels."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import sys
from pathlib import Path

from hpclab_hub.config import ConfigError, Deployment, load_deployment

DEFAULT_CONFIG = "deploy/hub.yaml"


def _load_or_report(path: str) -> Deployment | None:
    try:
        return load_deployment(path)
    except ConfigError as error:
        for issue in error.issues:
            print(f"{path}: {issue}", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a deploy YAML: one summary line when valid, one line per problem otherwise.

    Beyond the YAML itself, every kernel runtime must be on this machine (a missing one is an error: that
    kernel cannot start), and with --live the SLURM profiles must fit the running cluster.
    """
    deployment = _load_or_report(args.file)
    if deployment is None:
        return 1
    from hpclab_hub.config.checks import runtime_issues
    from hpclab_hub.host_notes import deployment_notes
    from hpclab_hub.config.yaml_source import load_with_lines

    lines = load_with_lines(Path(args.file).read_text(encoding="utf-8"))
    failed = runtime_issues(deployment, lines, Path(args.file).resolve().parent)
    for issue in failed:
        print(f"{args.file}: {issue}", file=sys.stderr)
    if args.live:
        from hpclab_hub.backends.slurm.live_check import live_report

        issues, warnings = live_report(deployment)
        # warnings: it fits, but some choices will be refused at start
        for kind, found in (("warning: ", warnings), ("", issues)):
            for issue in found:
                print(f"{args.file}: {kind}{type(issue)(issue.path, issue.message, lines.line_of(issue.path))}", file=sys.stderr)
        failed += issues
    if failed:
        return 1
    backends = ", ".join(f"{name} ({b.type})" for name, b in deployment.backends.items())
    print(
        f"{args.file}: OK — {len(deployment.profiles)} profiles "
        f"({', '.join(p.slug for p in deployment.profiles)}), backends: {backends}, "
        f"hub on {deployment.hub.public_url()}{deployment.hub.base_url}"
        + (" — fits the running cluster" if args.live else "")
    )
    for note in deployment_notes(deployment):
        print(f"{args.file}: note: {note}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema, or the Markdown admin reference."""
    from hpclab_hub.config.reference import json_schema, markdown_reference

    print(markdown_reference() if args.markdown else json.dumps(json_schema(), indent=2), end="" if args.markdown else "\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Validate, then replace this process with JupyterHub configured from the YAML."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        print("hpclab-hub: not starting: fix the errors above first.", file=sys.stderr)
        return 1
    jupyterhub = Path(sys.executable).with_name("jupyterhub")
    if not jupyterhub.exists():
        found = shutil.which("jupyterhub")
        if not found:
            print("hpclab-hub: jupyterhub is not installed (pip install 'hpclab[hub]').", file=sys.stderr)
            return 1
        jupyterhub = Path(found)
    env = dict(os.environ)
    proxy_dir = _proxy_folder(env.get("PATH", ""))
    if proxy_dir is None:
        print(
            "hpclab-hub: configurable-http-proxy was found neither on PATH nor next to this Python "
            f"({Path(sys.executable).parent.parent / 'node'}). Install it with `make proxy` in the repository, or "
            "`npm install -g configurable-http-proxy`.",
            file=sys.stderr,
        )
        return 1
    env["PATH"] = f"{proxy_dir}{os.pathsep}{env.get('PATH', '')}"
    _take_admin_password(deployment, env)
    env["HPCLAB_CONFIG"] = str(Path(args.config).resolve())
    if args.port:
        env["HPCLAB_PORT"] = str(args.port)
    port = args.port or int(os.environ.get("HPCLAB_PORT") or deployment.hub.port)  # the hub reads HPCLAB_PORT too
    from hpclab_hub.backends.local.trial import is_root, start_lines

    as_root = [name for name, b in deployment.backends.items() if b.type == "local" and b.accounts.mode == "hub-user"]
    if as_root and is_root():
        print(f"hpclab-hub: not starting: backends.{as_root[0]}.accounts.mode is hub-user, which runs servers as the hub's own "
              "account, and this hub runs as root: servers never run as root. Use mode auto (create with root, a one-person "
              "trial without) or create, or run the hub without root.", file=sys.stderr)
        return 1
    from hpclab_hub.ops.db_schema import start_refusal

    refused = start_refusal(deployment, args.config)
    if refused:
        print(f"hpclab-hub: not starting: {refused}", file=sys.stderr)
        return 1
    hub = deployment.hub
    print(f"hpclab-hub: starting JupyterHub on {hub.public_url(port)}{hub.base_url} (listening on {hub.ip}:{port}; "
          f"state in {hub.data_dir})", flush=True)
    if hub.user_subdomains:
        print(f"hpclab-hub: each user's servers at their own host name, e.g. {hub.public_url(port).replace('://', '://alice.', 1)}"
              f"{hub.base_url}user/alice/", flush=True)
    for line in start_lines(deployment):
        print(f"hpclab-hub: {line}", flush=True)
    _warn_if_servers_cannot_run_python(deployment)
    _warn_of_missing_runtimes(deployment, args.config)
    config_py = Path(__file__).with_name("jupyterhub_config.py")
    deployment.hub.data_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(deployment.hub.data_dir)
    argv = [str(jupyterhub), "-f", str(config_py)]
    if jupyterhub.parent == Path(sys.executable).parent:  # this environment's: run without import-time work it never uses
        argv = [sys.executable, "-m", "hpclab_hub.deferred_imports", "jupyterhub", "-f", str(config_py)]
    os.execve(argv[0], argv, env)
    return 0  # not reached


def cmd_upgrade(args: argparse.Namespace) -> int:
    """JupyterHub's database migration (``jupyterhub upgrade-db``) on the YAML's database, the hub stopped."""
    import logging

    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    from hpclab_hub.ops.db_schema import upgrade

    logging.basicConfig(level=logging.INFO, format="hpclab-hub upgrade: %(message)s")
    pid_file = deployment.hub.data_dir / "jupyterhub.pid"
    if pid_file.exists() and pid_file.read_text().strip().isdigit() and Path(f"/proc/{pid_file.read_text().strip()}").exists():
        print(f"hpclab-hub: the hub is running (pid {pid_file.read_text().strip()}): stop it first (systemctl stop hpclab-hub).",
              file=sys.stderr)
        return 1
    try:
        before, after = upgrade(deployment, logging.getLogger("hpclab.upgrade"))
    except ValueError as refused:
        print(f"hpclab-hub: not upgrading: {refused}", file=sys.stderr)
        return 1
    if before == after:
        print(f"hpclab-hub: the database is current (JupyterHub schema {after}); nothing to do.")
    else:
        print(f"hpclab-hub: database upgraded from JupyterHub schema {before or '(new)'} to {after}"
              + (" (the SQLite file was copied beside it first)" if deployment.hub.database_url.startswith("sqlite:") else ""))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the database (SQLite), cookie secret, login guard, YAML and certificates into a folder (docs: Backups)."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    from hpclab_hub.ops.db_schema import backup

    copied = backup(deployment, Path(args.config), Path(args.dest))
    print(f"hpclab-hub: backed up to {args.dest}: {', '.join(copied)}")
    if not deployment.hub.database_url.startswith("sqlite:"):
        print("hpclab-hub: the database is not SQLite: back it up with its own tool (pg_dump) as well.", file=sys.stderr)
    return 0


def _proxy_folder(path: str) -> str | None:
    """Where configurable-http-proxy is: on PATH, or where `make proxy` installs it (<venv>/node/node_modules/.bin)."""
    found = shutil.which("configurable-http-proxy", path=path)
    if found:
        return str(Path(found).parent)
    beside = Path(sys.executable).parent.parent / "node" / "node_modules" / ".bin"
    return str(beside) if (beside / "configurable-http-proxy").exists() else None


def _warn_if_servers_cannot_run_python(deployment: Deployment) -> None:
    """Local servers run as the users' accounts: say so at start if they cannot reach the hub's Python."""
    from hpclab_hub.backends.local.unix_accounts import unreachable_folder

    if os.geteuid() != 0 or not any(b.type == "local" for b in deployment.backends.values()):
        return
    folder = unreachable_folder(sys.executable)
    if folder is not None:
        print(
            f"hpclab-hub: warning: servers run as the users' own accounts, which cannot search {folder} and so cannot "
            f"start {sys.executable}. Install HPCLab outside it, or allow searching: chmod o+x {folder}",
            file=sys.stderr, flush=True,
        )


def _warn_of_missing_runtimes(deployment: Deployment, path: str) -> None:
    """A kernel runtime that is not here fails `check`, but the hub starts: that kernel answers with the reason."""
    from hpclab_hub.config.checks import runtime_issues
    from hpclab_hub.config.yaml_source import load_with_lines

    source = load_with_lines(Path(path).read_text(encoding="utf-8"))
    for issue in runtime_issues(deployment, source, Path(path).resolve().parent):
        print(f"hpclab-hub: warning: {path}: {issue} (its users get an error kernel saying why)", file=sys.stderr, flush=True)


def _take_admin_password(deployment: Deployment, env: dict[str, str]) -> None:
    """Hand the admins' password to the hub through an inherited pipe instead of its environment.

    A variable passed on would stay readable in /proc/<hub>/environ for the hub's whole life; the
    authenticator reads the pipe once at start (``<VARIABLE>_FD`` names it) and closes it.
    """
    variable = deployment.auth.admin_password_env
    password = env.pop(variable, "")
    if not password or deployment.auth.type != "native":
        return
    read_end, write_end = os.pipe()
    os.write(write_end, password.encode())  # far below a pipe's buffer: no reader needed yet
    os.close(write_end)
    os.set_inheritable(read_end, True)
    env[f"{variable}_FD"] = str(read_end)


def cmd_users_add(args: argparse.Namespace) -> int:
    """Create (or reset) an approved local account in the hub database."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    from jupyterhub import orm
    from nativeauthenticator.orm import UserInfo  # noqa: F401  (registers the table)

    from hpclab_hub.auth.native import generate_password, set_account
    from hpclab_hub.hubconfig import secure_state_files
    from hpclab_hub.config.usernames import InvalidUsername, check_username, username_max_length

    try:
        args.name = check_username(args.name, username_max_length(deployment.account_prefixes))
    except InvalidUsername as invalid:
        print(f"hpclab-hub: {invalid}", file=sys.stderr)
        return 1
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.name} (empty: generate one): ")
    else:
        password = ""
    generated = not password
    password = password or generate_password()
    if len(password) < deployment.auth.native.minimum_password_length:
        print(f"hpclab-hub: password too short (minimum {deployment.auth.native.minimum_password_length}).", file=sys.stderr)
        return 1
    secure_state_files(deployment)
    db = orm.new_session_factory(deployment.hub.database_url)()
    created = set_account(db, args.name, password)
    print(f"{'created' if created else 'updated'} account {args.name}" + (f"; password: {password}" if generated else ""))
    from hpclab_hub.backends.local.trial import trial_refusal, trial_user

    only = trial_user(deployment)
    if only and args.name != only:
        print(f"hpclab-hub: note: {args.name} cannot log in while the hub runs without root. {trial_refusal(only)}", file=sys.stderr)
    return 0


def cmd_kernels_install(args: argparse.Namespace) -> int:
    """Install the kernelspecs of the YAML's kernels (those with a runtime)."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    from hpclab_hub.kernels import install_kernels, runtime_status

    unknown = [name for name in args.names if name not in deployment.kernels]
    if unknown:
        print(f"hpclab-hub: not under kernels: in {args.config}: {', '.join(unknown)}", file=sys.stderr)
        return 1
    installed, skipped = install_kernels(deployment, prefix=args.prefix, user=args.user, names=args.names or None)
    for item in installed:
        present, why = runtime_status(item.name, deployment.kernels[item.name])
        print(f"installed {item.name} -> {item.path}" + ("" if present else f"  (runtime not present here: {why})"))
    for name in skipped:
        print(f"skipped {name}: no runtime declared")
    return 0


def cmd_kernels_list(args: argparse.Namespace) -> int:
    """Each YAML kernel: its runtime, whether that is present here, and where its kernelspec is installed."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    from jupyter_client.kernelspec import KernelSpecManager

    from hpclab_hub.kernels import runtime_status, runtime_text

    manager = KernelSpecManager()
    if args.prefix:
        manager.kernel_dirs.insert(0, str(Path(args.prefix) / "share" / "jupyter" / "kernels"))
    found = manager.find_kernel_specs()
    rows = [("KERNEL", "RUNTIME", "PRESENT", "INSTALLED")]
    reasons = []
    for name, entry in deployment.kernels.items():
        present, why = runtime_status(name, entry)
        rows.append((name, runtime_text(entry), "yes" if present else "no", found.get(name, "no")))
        if not present:
            reasons.append(f"  {name}: {why}")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if reasons:
        print("\nnot present:\n" + "\n".join(reasons))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpclab-hub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a deploy YAML")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    check.add_argument("--live", action="store_true", help="also check SLURM profiles against the running cluster")
    check.set_defaults(func=cmd_check)

    schema = sub.add_parser("schema", help="print the deploy YAML's JSON schema")
    schema.add_argument("--markdown", action="store_true", help="the admin reference in Markdown instead")
    schema.set_defaults(func=cmd_schema)

    run = sub.add_parser("run", help="start JupyterHub from a deploy YAML")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("--port", type=int, default=None, help="public port (overrides hub.port)")
    run.set_defaults(func=cmd_run)

    upgrade = sub.add_parser("upgrade", help="migrate the hub database to this release's schema (jupyterhub upgrade-db)")
    upgrade.add_argument("--config", default=DEFAULT_CONFIG)
    upgrade.set_defaults(func=cmd_upgrade)

    backup = sub.add_parser("backup", help="copy the database, cookie secret, login guard, YAML and certificates to a folder")
    backup.add_argument("dest", help="folder to copy into (created, 0700)")
    backup.add_argument("--config", default=DEFAULT_CONFIG)
    backup.set_defaults(func=cmd_backup)

    users = sub.add_parser("users", help="manage local accounts (auth.type: native)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="create or reset an approved account")
    add.add_argument("name")
    add.add_argument("--config", default=DEFAULT_CONFIG)
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(func=cmd_users_add)

    kernels = sub.add_parser("kernels", help="curated kernels: install kernelspecs, list runtimes")
    kernels_sub = kernels.add_subparsers(dest="kernels_command", required=True)
    install = kernels_sub.add_parser("install", help="install the kernelspecs the YAML declares (those with a runtime)")
    install.add_argument("names", nargs="*", metavar="NAME", help="only these kernels (default: all)")
    install.add_argument("--config", default=DEFAULT_CONFIG)
    where = install.add_mutually_exclusive_group()
    where.add_argument("--prefix", default=None, help="install into PREFIX/share/jupyter/kernels (default: this Python's prefix)")
    where.add_argument("--user", action="store_true", help="install for the current user only")
    install.set_defaults(func=cmd_kernels_install)
    listing = kernels_sub.add_parser("list", help="show each kernel's runtime, whether it is present, where it is installed")
    listing.add_argument("--config", default=DEFAULT_CONFIG)
    listing.add_argument("--prefix", default=None, help="also look for kernelspecs under PREFIX/share/jupyter/kernels")
    listing.set_defaults(func=cmd_kernels_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
