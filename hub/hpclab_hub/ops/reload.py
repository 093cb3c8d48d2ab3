"""A changed deploy YAML reaches a running hub without stopping its users' servers (``hpclab-hub reload``, SIGHUP).

On SIGHUP the hub reads its YAML again (``$HPCLAB_CONFIG``). A YAML that fails (a key, a type, a line), one that
changes what only a stop and start may change (:data:`RESTART_ONLY`), or one the hub would refuse to start on
(``start_problem``) changes nothing: the hub logs why, writes it to ``data_dir/reload-state.json`` (where
``hpclab-hub reload`` reads it) and goes on serving. A good one: the hub leaves its servers and its proxy running
(``cleanup_servers`` and ``cleanup_proxy`` off for this stop), stops its managed services (the idle culler),
commits its database and replaces itself (``exec``, same pid) with ``hpclab-hub run`` on the new YAML, which
re-adopts the servers as after any restart. The proxy keeps serving its routes throughout: :class:`KeptProxy`
adopts the running configurable-http-proxy (handed over by pid and API token) instead of starting another,
unless the new YAML changes how the proxy must be started (its ports, TLS, host routing): then a new one starts
and the hub puts every server's route back (a second or two during which servers are not reachable).

The process keeps its pid across ``exec``, so the servers and the proxy stay its children: servers started
before the reload are reaped by :func:`reap_inherited` (else an ended one would linger as a zombie that
``kill(pid, 0)`` still finds), the adopted proxy by :class:`AdoptedProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from jupyterhub.app import JupyterHub
from jupyterhub.proxy import ConfigurableHTTPProxy
from tornado.ioloop import PeriodicCallback

from hpclab_hub.config import ConfigError, Deployment, load_deployment
from hpclab_hub.ops.db_schema import start_refusal

log = logging.getLogger("JupyterHub")

#: the proxy handed over to the hub that replaces this one: "<pid> <signature>"
KEPT_PROXY_ENV = "HPCLAB_KEPT_PROXY"
#: what a reload did, for ``hpclab-hub reload`` (in data_dir)
STATE_FILE = "reload-state.json"
#: hub keys a reload refuses to change: where the state lives and where servers reach the hub API
RESTART_ONLY = ("data_dir", "db_url", "hub_ip", "hub_port")


def start_problem(deployment: Deployment, config_path: str | os.PathLike) -> str | None:
    """Why ``hpclab-hub run`` would refuse to start on this YAML, beyond the YAML itself (None: it would start)."""
    as_root = [name for name, b in deployment.backends.items() if b.type == "local" and b.accounts.mode == "hub-user"]
    if as_root and os.geteuid() == 0:
        return (
            f"backends.{as_root[0]}.accounts.mode is hub-user, which runs servers as the hub's own account, and this hub "
            "runs as root: servers never run as root. Use mode auto (create with root, a one-person trial without) or "
            "create, or run the hub without root."
        )
    return start_refusal(deployment, str(config_path))


def reload_problems(running: Deployment, config_path: str | os.PathLike) -> tuple[Deployment | None, list[str]]:
    """The new deployment, or None and why not: YAML issues (key path and line), restart-only changes, start refusals."""
    try:
        new = load_deployment(Path(config_path))
    except ConfigError as error:
        return None, [f"{config_path}: {issue}" for issue in error.issues]
    changed = [key for key in RESTART_ONLY if getattr(new.hub, key) != getattr(running.hub, key)]
    if changed:
        return None, [
            f"{config_path}: hub.{key} changed ({getattr(running.hub, key)} -> {getattr(new.hub, key)}): a reload "
            "keeps the hub's state and address; stop and start the hub for this change"
            for key in changed
        ]
    problem = start_problem(new, config_path)
    return (None, [f"{config_path}: {problem}"]) if problem else (new, [])


def write_state(data_dir: Path, state: str, issues: list[str] | None = None) -> None:
    """``{"state": reloading|refused, "at": time, "issues": [...]}`` in data_dir, replaced whole (0600)."""
    path = data_dir / STATE_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump({"state": state, "at": time.time(), "issues": issues or []}, stream)
    os.replace(temporary, path)


def read_state(data_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


class AdoptedProcess:
    """The proxy this process started before it replaced itself: only its pid is known (a child all the same)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not (or no longer) a child: alive while kill(pid, 0) finds it
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    self.returncode = 0
                return self.returncode
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.returncode

    def __enter__(self) -> AdoptedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _handed_over() -> tuple[int, str] | None:
    """The proxy a reload handed over (pid, signature), taken once."""
    value = os.environ.pop(KEPT_PROXY_ENV, "")
    pid, _, signature = value.partition(" ")
    return (int(pid), signature) if pid.isdigit() else None


class KeptProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy that survives a reload: adopted by the hub that replaces this one, routes and all."""

    def signature(self) -> str:
        """What the proxy was started with: a reload that changes it starts a new proxy."""
        started_with = [list(self.command), self.public_url, self.api_url, bool(self.host_routing), self.ssl_key, self.ssl_cert]
        return json.dumps(started_with)

    async def start(self) -> None:
        handed = _handed_over()
        if handed is not None:
            pid, signature = handed
            kept = AdoptedProcess(pid)
            if kept.poll() is None and signature == self.signature():
                self.proxy_process = kept
                self._write_pid_file()
                await self.get_all_routes()  # answers with the token handed over, or fails here
                self.log.info("hpclab: reload: kept the running proxy (pid %s) and its routes", pid)
                self._check_running_callback = _periodic(self.check_running, self.check_running_interval)
                return
            self.log.warning("hpclab: reload: the proxy's settings changed: starting a new one (servers keep running)")
            kept.terminate()
            if kept.wait(10) is None:
                kept.kill()
                kept.wait(5)
            self._remove_process_files()
        await super().start()


def _periodic(callback: Any, seconds: float) -> PeriodicCallback:
    periodic = PeriodicCallback(callback, 1e3 * seconds)
    periodic.start()
    return periodic


def reap_inherited(every: float = 0.5) -> list[int]:
    """Reap, as they end, the children this process had when it started (servers kept by a reload); their pids."""
    kept_proxy = os.environ.get(KEPT_PROXY_ENV, "").partition(" ")[0]
    pids = [child.pid for child in psutil.Process().children() if str(child.pid) != kept_proxy]
    if not pids:
        return []

    def reap() -> None:
        left = set(pids)
        while left:
            for pid in list(left):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    left.discard(pid)
            time.sleep(every)

    threading.Thread(target=reap, name="hpclab-reap-kept-servers", daemon=True).start()
    return pids


async def reload_hub(app: Any, config_path: str, running: Deployment) -> None:
    """Check the YAML again; refused: log and keep serving; accepted: leave servers and proxy, exec the new hub."""
    data_dir = running.hub.data_dir
    new, problems = reload_problems(running, config_path)
    if new is None:
        for problem in problems:
            log.error("hpclab: reload refused, the hub goes on unchanged: %s", problem)
        write_state(data_dir, "refused", problems)
        return
    log.warning("hpclab: reloading %s: servers keep running and are re-adopted; the proxy keeps its routes", config_path)
    write_state(data_dir, "reloading")
    app.cleanup_servers = False
    app.cleanup_proxy = False
    if app.http_server is not None:
        app.http_server.stop()
    await app.cleanup()
    env = dict(os.environ)
    proxy = app.proxy
    process = getattr(proxy, "proxy_process", None)
    if isinstance(proxy, KeptProxy) and process is not None and process.poll() is None:
        env[KEPT_PROXY_ENV] = f"{process.pid} {proxy.signature()}"
        env["CONFIGPROXY_AUTH_TOKEN"] = proxy.auth_token
    argv = [sys.executable, "-m", "hpclab_hub.cli", "run", "--config", str(config_path)]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as failed:  # servers keep running; a service manager starts the hub again (Restart=on-failure)
        log.critical("hpclab: reload: could not start %s: %s", argv, failed)
        os._exit(1)


def reload_on_sighup(config_path: str, running: Deployment) -> bool:
    """SIGHUP reloads this hub (called as JupyterHub loads its configuration, inside its event loop); False outside one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False

    def on_sighup() -> None:
        log.warning("hpclab: SIGHUP: checking %s", config_path)
        asyncio.ensure_future(reload_hub(JupyterHub.instance(), config_path, running))

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    return True
