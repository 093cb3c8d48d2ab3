"""A hub as a process, shared by the tests (support.hubtools) and the benchmarks (benchmarks/harness.py).

Free ports, folders other accounts can pass through, and :class:`HubProcess`: a hub (``hpclab-hub run`` or
plain ``jupyterhub``) started in its own session, waited for until its REST API answers through the proxy,
stopped with SIGTERM, and, on request, what it left behind (its proxy, single-user servers) ended too.
The benchmarks import this package through ``benchmarks/support``, a link to this folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil
import requests


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_reachable(path: Path) -> None:
    """Let other accounts traverse (not list) every folder above ``path``: servers run as the users' own accounts.

    pytest's temporary folders are 0700 and the interpreter may live under /root (pyenv).
    """
    for parent in reversed(Path(os.path.realpath(path)).parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def servers_under(folder: Path) -> list[psutil.Process]:
    """jupyterhub-singleuser processes whose working folder lies under ``folder``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "jupyterhub-singleuser" in cmdline and (proc.info.get("cwd") or "").startswith(f"{folder}/"):
            found.append(proc)
    return found


def _as_fd_3(fd: int) -> None:
    """In a child before exec: ``fd`` as fd 3, inheritable, where systemd's socket activation puts the first socket."""
    if fd != 3:
        os.dup2(fd, 3)
    os.set_inheritable(3, True)


class HubProcess:
    """One hub process; a subclass gives ``workdir`` and ``url`` (and ``verify`` for HTTPS) and calls :meth:`launch`.

    ``start_error`` is raised when the hub exits before it answers, ``timeout_error`` when it does not answer in time.
    """

    workdir: Path
    url: str  # the hub's public address, without a trailing slash
    verify: str | bool = True  # what requests should trust (a hub's own certificate when it serves HTTPS)
    proc: subprocess.Popen | None = None
    started_in: float = 0.0  # seconds from exec to the first /hub/api/ answer
    start_error: type[Exception] = RuntimeError
    timeout_error: type[Exception] = TimeoutError

    @property
    def log_path(self) -> Path:
        return self.workdir / "hub.log"

    def launch(
        self,
        argv: list[str],
        env: dict[str, str],
        timeout: float,
        cwd: Path | None = None,
        listening: socket.socket | None = None,
    ) -> None:
        """Run ``argv`` (output appended to the log) and wait until /hub/api/ answers through the proxy.

        ``listening``: a socket handed to the hub as systemd's socket activation does (fd 3, ``LISTEN_FDS=1``,
        ``LISTEN_PID`` the hub's own pid, set by a shell that then execs the hub)."""
        t0 = time.perf_counter()
        extra: dict = {}
        if listening is not None:
            env = dict(env, LISTEN_FDS="1")
            argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *argv]
            # fd 3 made inheritable (dup2 onto itself would leave it close-on-exec); Python's own fds are not, so
            # nothing else leaks with close_fds off
            extra = {"close_fds": False, "preexec_fn": lambda: _as_fd_3(listening.fileno())}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **extra
            )
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise self.start_error(f"hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):  # not listening yet: try again
                if requests.get(f"{self.url}/hub/api/", timeout=2, verify=self.verify).status_code == 200:
                    self.started_in = time.perf_counter() - t0
                    self.remember_processes()
                    return
            time.sleep(0.1)
        raise self.timeout_error(f"hub did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def _known(self) -> dict[tuple[int, float], psutil.Process]:
        if "_known_processes" not in self.__dict__:
            self._known_processes: dict[tuple[int, float], psutil.Process] = {}
        return self._known_processes

    def remember_processes(self) -> None:
        """Note what the hub started (proxy, servers) so :meth:`end_leftovers` reaches it after the hub exits."""
        with contextlib.suppress(psutil.NoSuchProcess, AttributeError):  # no hub (yet, or any more)
            assert self.proc is not None
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._known().setdefault((child.pid, child.create_time()), child)

    def terminate(self, timeout: float = 30) -> None:
        """SIGTERM the hub (as an admin's Ctrl-C would) and wait for it; SIGKILL after ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def end_leftovers(self) -> None:
        """End what the hub started and left running (proxy, single-user servers under its folder)."""
        # psutil.Process objects, not pids: they refuse to signal a pid that another process reused
        left = [p for p in self._known().values() if p.is_running()] + servers_under(self.workdir)
        for proc in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        for proc in psutil.wait_procs(left, timeout=5)[1]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
