"""The hub's side of a local backend's zygote (``backends.<name>.zygote``): start it, ask it for a server, stop it.

A start through the zygote skips the server's imports (about 1.4 s of CPU here): the zygote has made
them once, and forks (``zygote: true``). With ``zygote: spare`` the process that made them does not fork: it
becomes the one server it is asked for, the hub's own child like a fresh start's, and the hub starts the next
spare at once; so no two servers share anything a fork would copy (address-space layout, stack canary, hash
seed). A start that finds no spare ready (another start took it, the next one is still importing) starts normally
rather than wait. The server's command must be the hub's default one (``SERVER_COMMAND``); a backend with its
own ``singleuser_cmd``, or a zygote that cannot answer, starts normally.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import asdict
from typing import Any

from hpclab_hub.backends.local.cgroups import ServerCgroup
from hpclab_hub.backends.local.resources import Allocation
from hpclab_hub.backends.local.server_namespace import PrivateMounts
from hpclab_hub.backends.local.unix_accounts import UnixAccount

PROGRAM = "jupyterhub-singleuser"
#: the server's default command: the hub's Python, without import-time work it never uses (deferred_imports.py)
SERVER_COMMAND = (sys.executable, "-m", "hpclab_hub.deferred_imports", PROGRAM)
#: what a zygote's reply may take (its first answer waits for its imports)
READY_TIMEOUT, SPAWN_TIMEOUT = 60.0, 10.0


class ZygoteUnavailable(RuntimeError):
    """The zygote could not start a server: the start goes the normal way."""


class Zygote:
    """One zygote process and the socket to it; one request at a time."""

    def __init__(self, env: dict[str, str], spare: bool = False) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._reader: Any = None
        self._env = env
        self.spare = spare  # each process becomes one server itself (zygote: spare), instead of forking each
        self._claim = threading.Lock()
        self._claimed = False

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        # its command line names the server's program: `ps`, and the tools that look for servers, see what runs
        command = [sys.executable, "-m", "hpclab_hub.backends.local.zygote_main", PROGRAM, str(theirs.fileno())]
        if self.spare:
            command.append("--once")
        self._proc = subprocess.Popen(
            command, env=self._env, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), start_new_session=True
        )
        theirs.close()
        ours.settimeout(READY_TIMEOUT)
        self._channel, self._reader = ours, ours.makefile("r", encoding="utf-8")
        if json.loads(self._reader.readline() or "{}").get("ready") is not True:
            self.close()
            raise ZygoteUnavailable("the zygote did not start (see the hub log)")

    def warm(self) -> None:
        """Start the zygote now if it does not run (its imports take a second or two): the first start is then as
        quick as the others. A zygote that fails to start is logged by the start that finds it missing."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                try:
                    self._start()
                except (OSError, ValueError, ZygoteUnavailable):
                    self.close()

    def spawn(self, request: dict[str, Any]) -> tuple[int, subprocess.Popen[bytes] | None]:
        """The pid of a new server made from ``request`` (see ``request_for``), and with ``spare`` its Popen (the
        server is the hub's child, to be waited for); raises ZygoteUnavailable.

        The zygote gets a socket, never the request: the child reads the request (its token) from that socket itself.
        """
        if not self.spare:
            with self._lock:
                return self._ask(request), None
        with self._claim:  # one start waits for the spare at a time; a start beside it goes the normal way
            if self._claimed:
                raise ZygoteUnavailable("no spare ready: another start is taking it")
            self._claimed = True
        try:
            with self._lock:  # the next spare may still be importing: further along than a fresh start would be
                pid = self._ask(request)  # starts a spare first where none runs
                spare = self._proc
                assert spare is not None
                self._proc = None  # it is that server now: close() must not end it
                self.close()
            if pid != spare.pid:
                spare.terminate()
                raise ZygoteUnavailable(f"the spare answered pid {pid}, not its own {spare.pid}")
        finally:
            with self._claim:
                self._claimed = False
            threading.Thread(target=self.warm, name="hpclab-zygote-spare", daemon=True).start()  # the next start's
        return pid, spare

    def _ask(self, request: dict[str, Any]) -> int:
        """Hand the zygote a socket, send the request to the process it names; that pid (the lock is held)."""
        ours, theirs = socket.socketpair()
        try:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._channel is not None
            self._channel.settimeout(SPAWN_TIMEOUT)
            socket.send_fds(self._channel, [b"F"], [theirs.fileno()])
            theirs.close()
            answer = json.loads(self._reader.readline() or "{}")
            if "pid" in answer:
                ours.settimeout(SPAWN_TIMEOUT)
                ours.sendall(json.dumps(request).encode() + b"\n")
        except (OSError, ValueError) as error:
            self.close()
            raise ZygoteUnavailable(f"the zygote did not answer: {error}") from None
        finally:
            ours.close()
            theirs.close()
        if "pid" not in answer:
            raise ZygoteUnavailable(answer.get("error", "the zygote answered nothing"))
        return int(answer["pid"])

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        self._proc = self._channel = self._reader = None


_ZYGOTES: dict[str, Zygote] = {}


def zygote_for(backend_name: str, spare: bool = False) -> Zygote:
    """The zygote of a local backend (one per backend and hub process, started on first use); ``spare``: one whose
    processes each become a server themselves (``zygote: spare``)."""
    if backend_name not in _ZYGOTES:
        keep = {key: os.environ[key] for key in ("LANG", "LC_ALL") if key in os.environ}
        _ZYGOTES[backend_name] = Zygote({**keep, "PATH": "/usr/local/bin:/usr/bin:/bin"}, spare=spare)
    return _ZYGOTES[backend_name]


def warm_zygotes(backends: dict[str, bool]) -> None:
    """Start these local backends' zygotes (name: whether a spare) in the background, as the hub starts."""
    for name, spare in backends.items():
        threading.Thread(target=zygote_for(name, spare).warm, name=f"hpclab-zygote-{name}", daemon=True).start()


def request_for(
    argv: list[str],
    env: dict[str, str],
    account: UnixAccount,
    cgroup: ServerCgroup | None,
    allocation: Allocation,
    memory: int | None,
    nice: int,
    mounts: PrivateMounts | None,
) -> dict[str, Any]:
    """What the zygote's child needs to become this server: exactly what a fresh start's preexec gets."""
    return {
        "argv": argv,
        "env": env,
        "comm": account.name,
        "account": {**asdict(account), "groups": list(account.groups)},
        "cgroup": cgroup.as_state() if cgroup else None,
        "cpu_ids": list(allocation.cpu_ids),
        "memory": memory,
        "nice": nice,
        "mounts": {**asdict(mounts), "keep": list(mounts.keep)} if mounts else None,
    }
