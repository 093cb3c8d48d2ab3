"""Processes a test starts, found again after a signal: by a marker in their environment.

A command under test is started by :func:`sigterm_when` with a marker; every process it starts (loky workers,
their resource tracker, dcm2niix) inherits the marker, so :func:`left_behind` finds what is still
running after the command has exited, even orphans reparented to PID 1, and nothing of other runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psutil

MARKER = "HPCLAB_TEST_RUN"


def _marked(proc: psutil.Process, mark: str) -> bool:
    try:
        return proc.environ().get(MARKER) == mark and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def left_behind(mark: str, timeout: float = 10.0) -> list[str]:
    """``"pid cmdline"`` of the processes with ``mark`` still running after up to ``timeout`` s (none: [])."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in psutil.process_iter() if _marked(p, mark)]
        if not alive or time.monotonic() > deadline:
            return [f"{p.pid} {' '.join(p.cmdline())}" for p in alive if _marked(p, mark)]
        time.sleep(0.2)


def descendants(pid: int) -> list[psutil.Process]:
    """The processes below ``pid`` now (none if it has exited)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cmdline(proc: psutil.Process) -> str:
    """The command line of ``proc`` as one string ("" once it has gone)."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def wait_until(condition: Callable[[], object], timeout: float, what: str, every: float = 0.01,
               alive: subprocess.Popen | None = None) -> object:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``timeout`` s
    (or at once when the process ``alive`` has exited: the moment was missed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the command exited ({alive.returncode}) before {what}")
        time.sleep(every)
    raise AssertionError(f"no {what} after {timeout} s")


@dataclass
class Terminated:
    """What :func:`sigterm_when` saw: stderr, the run's marker, ``ready``'s value, the command lines below it."""

    err: str
    mark: str
    seen: object
    children: list[str]


def sigterm_when(cmd: list[str], ready: Callable[[int], object], what: str, timeout: float = 120,
                 env: dict[str, str] | None = None) -> Terminated:
    """Start ``cmd`` (marked), SIGTERM it once ``ready(pid)`` is true, wait for it; it must exit with 128 + SIGTERM.

    ``env`` (default os.environ) gets the marker, so :func:`left_behind` finds what the run left.
    """
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**(os.environ if env is None else env), MARKER: mark})
    try:
        seen = wait_until(lambda: ready(proc.pid), timeout, what, alive=proc)
        children = [cmdline(p) for p in descendants(proc.pid)]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    return Terminated(err, mark, seen, children)
