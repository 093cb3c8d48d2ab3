"""The proxy a restarted or reloaded hub keeps: configurable-http-proxy adopted by pid and API token, not started again.

A plain stop with ``keep_servers_on_restart`` leaves the proxy running (``cleanup_proxy`` off), noted with its API
token in ``jupyterhub-proxy.json`` beside its pid file (0600); a reload hands it over in the environment. The next
hub adopts it (:class:`KeptProxy`) unless how it must start has changed (its ports, TLS, host routing). See
``hpclab_hub/reload.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
from jupyterhub.proxy import ConfigurableHTTPProxy
from tornado.ioloop import PeriodicCallback

#: the proxy handed over to the hub that replaces this one: "<pid> <signature>"
KEPT_PROXY_ENV = "HPCLAB_KEPT_PROXY"
#: the running proxy noted for the next hub after a plain stop (beside the proxy's pid file, 0600)
HANDOVER_FILE = "jupyterhub-proxy.json"


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

    def _handover_path(self) -> Path:
        return Path(self.pid_file or "jupyterhub-proxy.pid").with_name(HANDOVER_FILE)

    def _write_handover(self, pid: int) -> None:
        """Note the running proxy (pid, how it was started, its API token) for the next hub (0600, beside its pid file)."""
        path = self._handover_path()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as stream:
                json.dump({"pid": pid, "signature": self.signature(), "token": self.auth_token}, stream)
            os.replace(temporary, path)

    def _left_running(self) -> tuple[int, str, str] | None:
        """The proxy a hub that stopped left running (``cleanup_proxy`` off), if it still runs: (pid, signature, token)."""
        try:
            noted = json.loads(self._handover_path().read_text())
            pid, signature, token = int(noted["pid"]), str(noted["signature"]), str(noted["token"])
            command = " ".join(psutil.Process(pid).cmdline())
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return None
        return (pid, signature, token) if "configurable-http-proxy" in command else None

    async def start(self) -> None:
        handed, token = _handed_over(), ""
        if handed is None:  # a plain stop and start: the proxy the last hub left running, if any
            left = self._left_running()
            if left is not None:
                handed, token = left[:2], left[2]
        if handed is not None:
            pid, signature = handed
            kept = AdoptedProcess(pid)
            if kept.poll() is None and signature == self.signature():
                before = str(self.auth_token)  # type: ignore[has-type]
                self.auth_token = token or before
                try:
                    await self.get_all_routes()  # answers with the token handed over, or fails here
                except Exception:
                    if not token:
                        raise
                    self.auth_token = before  # a noted proxy that does not take its token: start a new one
                    self.log.warning("hpclab: the proxy left running (pid %s) did not answer: starting a new one", pid)
                else:
                    self.proxy_process = kept
                    self._write_pid_file()
                    self._write_handover(pid)
                    self.log.info(
                        "hpclab: %s: kept the running proxy (pid %s) and its routes", "restart" if token else "reload", pid
                    )
                    self._check_running_callback = _periodic(self.check_running, self.check_running_interval)
                    return
            else:
                self.log.warning("hpclab: the proxy's settings changed: starting a new one (servers keep running)")
            kept.terminate()
            if kept.wait(10) is None:
                kept.kill()
                kept.wait(5)
            self._remove_process_files()
        await super().start()
        process = getattr(self, "proxy_process", None)
        if process is not None:
            self._write_handover(process.pid)


def _periodic(callback: Any, seconds: float) -> PeriodicCallback:
    periodic = PeriodicCallback(callback, 1e3 * seconds)
    periodic.start()
    return periodic
