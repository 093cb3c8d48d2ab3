"""The zygote process: JupyterLab's server imported once, then one fork per start (``python -m`` this module); or,
with ``--once`` (``zygote: spare``), no fork: the process becomes the first server it is asked for.

Started by the hub (``zygote.py``) with one end of a socket pair (its fd number the second argument). It imports
the single-user server and its extensions, then waits for requests, one JSON line each, and answers each with the
pid of a child it forked (or why it could not); each start's contents (its environment, the user's token) go
to the child alone, over a socket of its own, so the zygote never holds them. The child, before any user code:
leaves the zygote's session and signal handlers, closes every inherited file descriptor but 0-2,
reseeds ``random``, and runs the same preexec a fresh start runs (cgroup, priority, private /tmp,
/dev/shm and /proc, umask, setgroups/setgid/setuid to the user's account, the home folder); then it
replaces the whole environment with the server's and serves. Nothing of one start reaches another:
the zygote itself never runs user code, holds no user's credentials and has no threads when it forks.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_config_path

from hpclab.lab_features import OFF_UNLESS_ASKED, SERVING_NO_ONE
from hpclab_hub.backends.local.cgroups import ServerCgroup
from hpclab_hub.backends.local.preexec import server_preexec
from hpclab_hub.backends.local.server_namespace import PrivateMounts
from hpclab_hub.backends.local.unix_accounts import UnixAccount
from hpclab_hub.deferred_imports import defer_rfc3987_syntax, find_console_script
from hpclab_hub.ops.shown_environ import dumpable_again, show_environ

PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, value, 0, 0, 0)


def _preload(program: str) -> Any:
    """Import the server and its extensions once: what every child would otherwise import itself."""
    defer_rfc3987_syntax()
    entry = find_console_script(program)
    if entry is None:
        raise SystemExit(f"hpclab zygote: no console script {program!r} in {sys.prefix}")
    function = entry.load()
    import jupyter_server.serverapp  # noqa: F401  # deferred: what the children import, loaded here once
    import jupyterlab.labapp  # noqa: F401  # deferred: as above

    for name in ("hpclab.walltime", "hpclab.oom_guard", "hpclab.examples", "hpclab.busy_activity", *_installed_extensions()):
        try:
            __import__(name)
        except Exception as error:  # the child imports it again, and says why there if it must
            print(f"hpclab zygote: could not preload {name}: {error!r}", file=sys.stderr)
    return function


def _installed_extensions() -> list[str]:
    """The server extensions this environment enables (jupyter_server_config.d): their imports are made once, here."""
    names: set[str] = set()
    for folder in jupyter_config_path():
        for path in sorted(Path(folder, "jupyter_server_config.d").glob("*.json")):
            try:
                config = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            names |= {name for name, on in config.get("ServerApp", {}).get("jpserver_extensions", {}).items() if on}
    # only what every server loads: one the hub turns off by default may hold what a child cannot keep (dask_labextension
    # makes an event loop with its epoll fd and sockets at import; every child closes the zygote's fds)
    return sorted(names - set(SERVING_NO_ONE) - set(OFF_UNLESS_ASKED))


def _read_request(own: socket.socket) -> dict[str, Any]:
    """This start's request, read by the child alone from its own socket: the zygote never sees its token."""
    with own.makefile("r", encoding="utf-8") as reader:
        return dict(json.loads(reader.readline()))


def _child(own: socket.socket, function: Any, channel: socket.socket) -> None:
    """In the forked child: read this start's request, become the user's server (never returns)."""
    code, who = 1, "?"
    try:
        if os.getsid(0) != os.getpid():  # a spare (--once) is its session's leader already
            os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # as Python's own start leaves it (and a fresh server has it): ignored, so that writing to a connection the
        # browser closed is an error the server handles (EPIPE), not a signal that ends it without a word
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        channel.close()
        request = _read_request(own)
        own.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        random.seed()
        who = request["comm"]
        _prctl(PR_SET_NAME, who.encode()[:15])
        account = UnixAccount(**{**request["account"], "groups": tuple(request["account"]["groups"])})
        mounts = PrivateMounts(**{**request["mounts"], "keep": tuple(request["mounts"]["keep"])}) if request["mounts"] else None
        cgroup = ServerCgroup.from_state(request["cgroup"] or {})
        server_preexec(account, cgroup, tuple(request["cpu_ids"]), request["memory"], request["nice"], mounts)()
        # a change of account without exec leaves the process undumpable: its own kernels could not see it in /proc
        # (hidepid) nor could psutil in it; nothing of anyone else is in its memory (the zygote never read a request)
        dumpable_again()
        os.environ.clear()
        os.environ.update(request["env"])
        if not show_environ(request["env"]):  # else /proc/<pid>/environ would go on showing the zygote's
            os.write(2, f"hpclab zygote: /proc/{os.getpid()}/environ shows the zygote's environment (refused)\n".encode())
        _defaults_from_this_environment()
        sys.argv = list(request["argv"])
        result = function()
        code = result if isinstance(result, int) else 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException as error:  # the hub learns only the exit: the reason goes to its log (our stderr)
        os.write(2, f"hpclab zygote: the server of {who} failed to start: {error!r}\n".encode())
    finally:
        os.write(2, f"hpclab zygote: the server of {who} (pid {os.getpid()}) ended with code {code}\n".encode())
        os._exit(code)


def _defaults_from_this_environment() -> None:
    """Recompute the defaults the preloaded modules computed from the zygote's environment at import.

    JupyterLab's user-settings and workspaces folders are class defaults made from $HOME and $JUPYTERLAB_*_DIR when
    jupyterlab.labapp is imported: the zygote's (root's home), which a child could not write, and the same for every
    user. Found by listing every traitlets default that named the zygote's home (tests/hub/backends/local/test_zygote.py).
    """
    from jupyterlab.commands import get_user_settings_dir, get_workspaces_dir  # deferred: preloaded in the zygote
    from jupyterlab.labapp import LabApp  # deferred: as above

    values = {"user_settings_dir": get_user_settings_dir(), "workspaces_dir": get_workspaces_dir()}
    classes, i = [LabApp], 0
    while i < len(classes):  # LabApp and every subclass: each class caches its static defaults (traitlets)
        classes += [sub for sub in classes[i].__subclasses__() if sub not in classes]
        i += 1
    for cls in classes:
        cached = cls.__dict__.get("_static_immutable_initial_values", {})
        for name, value in values.items():
            cls.class_traits()[name].default_value = value
            if name in cached:
                cached[name] = value


def serve(program: str, fd: int, once: bool = False) -> None:
    """Answer spawn requests on the socket ``fd`` until the hub closes it (it exits, or execs itself on a reload): then
    leave. The servers it forked stay; they are the hub's to follow, by pid.

    A request is one byte and a socket (SCM_RIGHTS) over which the hub then sends that start's request to the child
    alone; the zygote answers with the child's pid. ``once`` (a spare, ``zygote: spare``): no fork; this process
    answers with its own pid and becomes that one server itself.
    """
    channel = socket.socket(fileno=fd)
    function = _preload(program)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: the hub watches their pids
    try:
        channel.sendall(b'{"ready": true}\n')
    except BrokenPipeError:  # the hub ended (or gave up waiting) while the imports were made
        return
    while True:
        _, fds, _, _ = socket.recv_fds(channel, 1, 1)
        if not fds:
            return  # the hub is gone (or reloaded)
        own = socket.socket(fileno=fds[0])
        if threading.active_count() != 1:  # a fork copies only this thread: never fork with others holding locks
            own.close()
            channel.sendall(json.dumps({"error": "the zygote has threads; start normally"}).encode() + b"\n")
            continue
        if once:
            channel.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
            _child(own, function, channel)  # never returns
        pid = os.fork()
        if pid == 0:
            _child(own, function, channel)
        own.close()
        channel.sendall(json.dumps({"pid": pid}).encode() + b"\n")


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), once="--once" in sys.argv[3:])
