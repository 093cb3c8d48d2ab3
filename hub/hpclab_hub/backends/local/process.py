"""A local server's process: started in its own session, polled, stopped with SIGINT, then SIGTERM, then SIGKILL.

What JupyterHub's LocalProcessSpawner does for one process, kept here so the local backend is an
object of its own rather than a spawner subclass. After a hub restart only the pid is known; the
backend checks that it is still its server before trusting it (``backend.py``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from hpclab_hub.backends.local.preexec import process_start
from hpclab_hub.config.units import format_memory

#: seconds to wait after SIGINT, then SIGTERM, then SIGKILL (JupyterHub's defaults)
INTERRUPT_TIMEOUT, TERM_TIMEOUT, KILL_TIMEOUT = 10.0, 5.0, 5.0


class ServerProcess:
    """One server process: its Popen while this hub started it, else only its pid (re-adopted)."""

    def __init__(self, log: Any, log_name: str, pid: int = 0) -> None:
        self.log, self.log_name = log, log_name
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = pid

    def adopt(self, pid: int) -> None:
        """A process another started for this server (the zygote): known by its pid only, like one re-adopted."""
        self.proc, self.pid = None, pid

    def take(self, proc: subprocess.Popen[bytes]) -> None:
        """A process the hub started before it knew whose it would be (a zygote's spare): followed as if started here."""
        self.proc, self.pid = proc, proc.pid

    def start(self, command: list[str], env: dict[str, str], preexec: Callable[[], None]) -> None:
        """Start ``command`` in a session of its own (the hub's signals are not its), reading nothing from the hub."""
        self.log.info("Spawning %s", " ".join(shlex.quote(part) for part in command))
        self.proc = subprocess.Popen(command, env=env, preexec_fn=preexec, start_new_session=True, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def exited(self) -> int | None:
        """The exit code if the process has ended (-1 where only its pid is known), else None."""
        if self.proc is not None:
            return self.proc.poll()
        return None if not self.pid or self.signal(0) else -1

    def poll(self) -> int | None:
        """None while it runs; its exit code (0 where only the pid is known) once it is gone."""
        if self.proc is not None:
            status = self.proc.poll()
            if status is not None:
                self.proc.wait()  # reaped (it has ended: no wait); the server has no pipes to close
            return status
        if not self.pid:
            return 0
        return None if self.signal(0) else 0

    def signal(self, sig: int) -> bool:
        """Send ``sig``; False if the process is gone."""
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    async def _wait_for_end(self, timeout: float) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            status = self.poll()
            if status is not None:
                return status
            await asyncio.sleep(0.1)
        return self.poll()

    async def stop(self, now: bool = False) -> None:
        """SIGINT (skipped when ``now``), SIGTERM, SIGKILL, each given its time to work."""
        steps = [(signal.SIGTERM, TERM_TIMEOUT), (signal.SIGKILL, KILL_TIMEOUT)]
        if not now:
            steps.insert(0, (signal.SIGINT, INTERRUPT_TIMEOUT))
        for sig, timeout in steps:
            if self.poll() is not None:
                return
            self.log.debug("Sending %s to %s (pid %s)", sig.name, self.log_name, self.pid)
            self.signal(sig)
            if await self._wait_for_end(timeout) is not None:
                return
        self.log.warning("Process %s of %s never died", self.pid, self.log_name)


def report_oom(ctx: Any, group: Any, seen: int, limit: int | None) -> int:
    """Log the kernel's OOM kills in a server's cgroup since ``seen`` of them were logged; the count now."""
    if group is None:
        return seen
    kills = group.oom_kills()
    if kills > seen:
        ctx.log.warning(
            "Out of memory: the kernel killed %d process(es) of %s, which went over its memory limit (%s)",
            kills - seen,
            ctx.log_name,
            format_memory(limit) if limit else "its limit",
        )
    return max(kills, seen)


def foreign_reason(pid: int, group: Any, pid_started: float | None) -> str:
    """Why a re-adopted ``pid`` is no longer its server ('' if it still is): after a reboot pids are reused."""
    if group is not None:
        if not group.exists():
            return "its cgroup is gone (a reboot?)"
        if not group.contains(pid):
            return "it is not in the server's cgroup"
        return ""
    if pid_started is not None and process_start(pid) != pid_started:
        return "another process has that pid now"
    return ""
