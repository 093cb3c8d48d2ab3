"""A changed deploy YAML reaches a running hub without stopping its users' servers (``hpclab-hub reload``, SIGHUP).

On SIGHUP the hub reads its YAML again (``$HPCLAB_CONFIG``). A YAML that fails (a key, a type, a line), one that
changes what only a stop and start may change (:data:`RESTART_ONLY`), or one the hub would refuse to start on
(``start_problem``) changes nothing: the hub logs why, writes it to ``data_dir/reload-state.json`` (where ``hpclab-
hub reload`` reads it) and goes on serving. A good one: the hub leaves its servers and its proxy running
(``cleanup_servers`` and ``cleanup_proxy`` off for this stop), stops its managed services (the idle culler), commits
its database and replaces itself (``exec``, same pid) with JupyterHub on the new YAML (what ``hpclab-hub run`` would
exec after its checks), which re-adopts the servers as after any restart. The proxy keeps serving its routes
throughout: :class:`KeptProxy` adopts the running configurable-http-proxy (handed over by pid and API token) instead
of starting another, unless the new YAML changes how the proxy must be started (its ports, TLS, host routing): then
a new one starts and the hub puts every server's route back (a second or two during which servers are not
reachable). A plain stop with ``keep_servers_on_restart`` leaves the proxy running as well (``cleanup_proxy`` off),
noted with its API token in ``jupyterhub-proxy.json`` beside its pid file (0600), and the next start adopts it the
same way.

The hub's API does not refuse a connection during a reload: the old hub stops accepting on its listening socket
but leaves it open and inheritable (:func:`keep_listening_sockets`), and the new hub takes it over
(:func:`adopt_kept_sockets`) instead of binding a new one, so a request that arrives while the new hub starts waits
in the kernel's backlog and is answered once it is up (a request the old hub was answering at the ``exec`` is cut).

The process keeps its pid across ``exec``, so the servers and the proxy stay its children: servers started
before the reload are reaped by :func:`reap_inherited` (else an ended one would linger as a zombie that
``kill(pid, 0)`` still finds), the adopted proxy by :class:`AdoptedProcess`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from jupyterhub.app import JupyterHub
from tornado.tcpserver import TCPServer
from tornado.web import RequestHandler

from hpclab_hub.backends.without_root import without_root_refusals
from hpclab_hub.config import ConfigError, Deployment, load_deployment
from hpclab_hub.ops.db_schema import start_refusal
from hpclab_hub.ops.kept_proxy import KEPT_PROXY_ENV, KeptProxy

log = logging.getLogger("JupyterHub")

#: the hub's listening sockets handed over to the hub that replaces this one: "<fd>,<fd>"
KEPT_SOCKETS_ENV = "HPCLAB_KEPT_HUB_SOCKETS"
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
    if problem:
        return None, [f"{config_path}: {problem}"]
    refusals = without_root_refusals(new)  # what `hpclab-hub run` refuses to start without root
    return (None, [f"{config_path}: {refusal}" for refusal in refusals]) if refusals else (new, [])


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


_HANDED_OVER: list[socket.socket] = []


def stop_accepting(server: TCPServer) -> list[socket.socket]:
    """Stop accepting on ``server``'s listening sockets without closing them; the sockets (held until exec or exit).

    Connections that arrive from now on wait in the kernel's backlog until a hub accepts them."""
    sockets: dict[int, socket.socket] = getattr(server, "_sockets", {})
    handlers: dict[int, Any] = getattr(server, "_handlers", {})
    stopped = []
    for fd, listening in list(sockets.items()):
        remove = handlers.pop(fd, None)
        if remove is not None:
            remove()
        _HANDED_OVER.append(listening)  # referenced until exec or exit: a collected socket object closes its fd
        stopped.append(listening)
    sockets.clear()  # a later stop() must not close them
    return stopped


def keep_listening_sockets(server: TCPServer) -> list[int]:
    """Stop accepting on ``server``'s listening sockets but keep them open, inheritable across ``exec``; their fds."""
    kept = []
    for listening in stop_accepting(server):
        listening.set_inheritable(True)
        kept.append(listening.fileno())
    return kept


def systemd_sockets() -> list[str]:
    """The fds systemd's socket activation passed to this process (``sd_listen_fds``), taken once.

    With deploy/systemd/hpclab-hub.socket, systemd holds the hub's listening socket: across a stop and start of the
    service, connections wait in its backlog instead of being refused. ``hpclab-hub run`` execs JupyterHub in the
    same process, so ``LISTEN_PID`` still names it."""
    count, pid = os.environ.pop("LISTEN_FDS", ""), os.environ.pop("LISTEN_PID", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not (count.isdigit() and pid == str(os.getpid())):
        return []
    return [str(fd) for fd in range(3, 3 + int(count))]


def adopt_kept_sockets() -> list[socket.socket]:
    """The listening sockets a reload or systemd handed over (taken once); the hub's ``listen(port)`` uses them, not a
    new bind."""
    kept: list[socket.socket] = []
    for fd in os.environ.pop(KEPT_SOCKETS_ENV, "").split(",") + systemd_sockets():
        if fd.isdigit():
            try:
                listening = socket.socket(fileno=int(fd))
            except OSError:
                continue
            if listening.type != socket.SOCK_STREAM or listening.family not in (socket.AF_INET, socket.AF_INET6):
                listening.detach()  # not a TCP socket (a misconfigured unit): left alone
                continue
            listening.set_inheritable(False)  # servers started from now on must not hold it
            listening.setblocking(False)  # tornado's accept loop expects it (systemd passes blocking sockets)
            kept.append(listening)
    if not kept:
        return []
    original = TCPServer.listen

    def listen(self: TCPServer, port: int, address: str | None = None, *args: Any, **kwargs: Any) -> None:
        mine = [s for s in kept if s.getsockname()[1] == port]
        if not mine:
            original(self, port, address, *args, **kwargs)
            return
        for listening in mine:
            kept.remove(listening)
        if not kept:
            TCPServer.listen = original  # type: ignore[method-assign]
        self.add_sockets(mine)
        log.info("hpclab: took over the listening socket on port %s (connections waited, none refused)", port)

    TCPServer.listen = listen  # type: ignore[method-assign]
    return list(kept)


#: requests a handler of this hub is answering now, when the last one ended, and whether the hub is stopping
_IN_FLIGHT = [0]
_LAST_DONE = [0.0]
_DRAINING = [False]


def drain_on_stop(grace: float = 3.0, quiet: float = 0.25) -> None:
    """On any stop (SIGTERM, a reload), stop accepting first and let the requests in flight finish, up to ``grace``
    seconds, before JupyterHub's own cleanup cancels them; then close what connections are left.

    A request that arrives meanwhile on a kept-alive connection (the proxy keeps some) is answered with
    ``Connection: close``, so the proxy opens a new connection for its next request, which waits in the listening
    socket's backlog for the next hub; the hub ends once no request came for ``quiet`` seconds. Closing an idle
    kept-alive connection at the moment the proxy sends on it would fail that request (503): this avoids the race
    instead of narrowing it. A connection that arrives meanwhile waits in the backlog when the socket outlives this hub
    (systemd's socket activation, a reload's handover); otherwise it is refused at the exit."""
    original_execute = RequestHandler._execute
    original_cleanup = JupyterHub.cleanup

    async def execute(self: RequestHandler, *args: Any, **kwargs: Any) -> Any:
        _IN_FLIGHT[0] += 1
        if _DRAINING[0]:
            self.set_header("Connection", "close")
        try:
            return await original_execute(self, *args, **kwargs)
        finally:
            _IN_FLIGHT[0] -= 1
            _LAST_DONE[0] = time.monotonic()

    async def cleanup(self: JupyterHub) -> None:
        server = self.http_server
        if server is not None and not _DRAINING[0]:
            _DRAINING[0] = True
            stop_accepting(server)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (_IN_FLIGHT[0] > 0 or time.monotonic() - _LAST_DONE[0] < quiet):
                await asyncio.sleep(0.01)
            if _IN_FLIGHT[0]:
                log.warning("hpclab: stopping with %d requests still being answered after %.0f s", _IN_FLIGHT[0], grace)
            await server.close_all_connections()
        await original_cleanup(self)

    RequestHandler._execute = execute  # type: ignore[method-assign]
    JupyterHub.cleanup = cleanup


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
    env = dict(os.environ)
    if app.http_server is not None:
        kept = keep_listening_sockets(app.http_server)
        if kept:
            env[KEPT_SOCKETS_ENV] = ",".join(map(str, kept))
        app.http_server.stop()
    await app.cleanup()
    proxy = app.proxy
    process = getattr(proxy, "proxy_process", None)
    if isinstance(proxy, KeptProxy) and process is not None and process.poll() is None:
        env[KEPT_PROXY_ENV] = f"{process.pid} {proxy.signature()}"
        env["CONFIGPROXY_AUTH_TOKEN"] = proxy.auth_token
    argv = [sys.executable, "-m", "hpclab_hub.cli", "run", "--config", str(config_path)]
    if Path(sys.executable).with_name("jupyterhub").exists() and os.environ.get("HPCLAB_CONFIG"):
        # what `hpclab-hub run` would exec after its checks (done above), in the environment it prepared then
        config_py = Path(__file__).resolve().with_name("jupyterhub_config.py")
        argv = [sys.executable, "-m", "hpclab_hub.deferred_imports", "jupyterhub", "-f", str(config_py)]
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
