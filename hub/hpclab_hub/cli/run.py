"""``hpclab-hub run``: validate the YAML, check the host, then become JupyterHub configured from it."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from hpclab_hub.backends.local.trial import is_root, start_lines
from hpclab_hub.backends.local.unix_accounts import unreachable_folder
from hpclab_hub.backends.without_root import without_root_refusals
from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.cli.run_as import drop_to, run_as_refusals
from hpclab_hub.config import Deployment
from hpclab_hub.config.checks import runtime_issues
from hpclab_hub.config.yaml_source import load_with_lines
from hpclab_hub.deferred_imports import run_console_script
from hpclab_hub.ops.db_schema import start_refusal
from hpclab_hub.ops.shown_environ import show_environ


def public_port(deployment: Deployment, port: int | None = None) -> int:
    """The hub's public port: ``--port``, else HPCLAB_PORT (which the hub reads too), else hub.port."""
    return port or int(os.environ.get("HPCLAB_PORT") or deployment.hub.port)


def public_address(config: str) -> str:
    """Where users open the hub of ``config`` at its public port; `make hub` prints it before the hub starts."""
    deployment = _load_or_report(config)
    if deployment is None:
        return "(the address: see below, once the configuration's errors are fixed)"
    return f"{deployment.hub.public_url(public_port(deployment))}{deployment.hub.base_url}"


def cmd_run(args: argparse.Namespace) -> int:
    """Validate, then run JupyterHub configured from the YAML in this process (exec where it is another environment's)."""
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
    port = public_port(deployment, args.port)
    if getattr(args, "user", None):
        refusals = run_as_refusals(deployment, args.user, port, args.config)
        for refusal in refusals:
            print(f"hpclab-hub: not starting: {refusal}", file=sys.stderr)
        if refusals:
            return 1
        drop_to(args.user, deployment.hub.data_dir, env)
        print(f"hpclab-hub: running as {args.user} (uid {os.getuid()}); {deployment.hub.data_dir} is its", flush=True)
    as_root = [name for name, b in deployment.backends.items() if b.type == "local" and b.accounts.mode == "hub-user"]
    if as_root and is_root():
        print(
            f"hpclab-hub: not starting: backends.{as_root[0]}.accounts.mode is hub-user, which runs servers as the hub's own "
            "account, and this hub runs as root: servers never run as root. Use mode auto (create with root, a one-person "
            "trial without) or create, or run the hub without root.",
            file=sys.stderr,
        )
        return 1
    for refusal in without_root_refusals(deployment):
        print(f"hpclab-hub: not starting: {refusal}", file=sys.stderr)
    if without_root_refusals(deployment):
        return 1
    refused = start_refusal(deployment, args.config)
    if refused:
        print(f"hpclab-hub: not starting: {refused}", file=sys.stderr)
        return 1
    hub = deployment.hub
    print(
        f"hpclab-hub: starting JupyterHub on {hub.public_url(port)}{hub.base_url} (listening on {hub.ip}:{port}; "
        f"state in {hub.data_dir})",
        flush=True,
    )
    if hub.user_subdomains:
        print(
            f"hpclab-hub: each user's servers at their own host name, e.g. {hub.public_url(port).replace('://', '://alice.', 1)}"
            f"{hub.base_url}user/alice/",
            flush=True,
        )
    for line in start_lines(deployment):
        print(f"hpclab-hub: {line}", flush=True)
    _warn_if_servers_cannot_run_python(deployment)
    warn_of_missing_runtimes(deployment, args.config)
    config_py = Path(__file__).resolve().parents[1] / "jupyterhub_config.py"
    deployment.hub.data_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(deployment.hub.data_dir)
    argv = [str(jupyterhub), "-f", str(config_py)]
    if jupyterhub.parent == Path(sys.executable).parent:
        # this environment's JupyterHub runs in this process: what the checks above imported (JupyterHub's database
        # model, SQLAlchemy, alembic, the YAML's model) is not imported again by a second interpreter, and what it
        # would import for nothing is deferred (deferred_imports.py); a restart's pause is that much shorter. The
        # kernel must show the hub's environment, not the one this process started with (shown_environ.py)
        os.environ.clear()
        os.environ.update(env)
        if show_environ(env):
            return run_console_script(["jupyterhub", "-f", str(config_py)])
        argv = [sys.executable, "-m", "hpclab_hub.deferred_imports", "jupyterhub", "-f", str(config_py)]
    os.execve(argv[0], argv, env)  # never returns


def _proxy_folder(path: str) -> str | None:
    """Where configurable-http-proxy is: on PATH, or where `make proxy` installs it (<venv>/node/node_modules/.bin)."""
    found = shutil.which("configurable-http-proxy", path=path)
    if found:
        return str(Path(found).parent)
    beside = Path(sys.executable).parent.parent / "node" / "node_modules" / ".bin"
    return str(beside) if (beside / "configurable-http-proxy").exists() else None


def _warn_if_servers_cannot_run_python(deployment: Deployment) -> None:
    """Local servers run as the users' accounts: say so at start if they cannot reach the hub's Python."""
    if os.geteuid() != 0 or not any(b.type == "local" for b in deployment.backends.values()):
        return
    folder = unreachable_folder(sys.executable)
    if folder is not None:
        print(
            f"hpclab-hub: warning: servers run as the users' own accounts, which cannot search {folder} and so cannot "
            f"start {sys.executable}. Install HPCLab outside it, or allow searching: chmod o+x {folder}",
            file=sys.stderr,
            flush=True,
        )


def warn_of_missing_runtimes(deployment: Deployment, path: str) -> None:
    """A kernel runtime that is not here fails `check`, but the hub starts: that kernel answers with the reason."""
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
