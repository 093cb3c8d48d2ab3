"""SIGTERM and SIGINT as exceptions, so ``finally`` blocks run and worker pools are stopped.

SLURM (at the wall time, on ``scancel``) and ``timeout`` send SIGTERM; its default action ends the
process at once, skipping every clean-up: temporary folders stay, loky workers are reparented to
PID 1 and run on, finished work is lost. :func:`signals_raise` turns the signal into
:class:`Interrupted` (a KeyboardInterrupt, so code that already handles Ctrl-C handles it too), and
:func:`stop_worker_pools` ends the process pools this process started. :func:`signals_deferred`
holds them back for a moment that must not be cut in two (renaming a set of results into place).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """The process received SIGTERM or SIGINT; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal (128 + number: 143, 130)."""
        return 128 + self.signum


#: the signals :func:`signals_raise` turned into exceptions, kept because Python drops an exception
#: raised inside a ``__del__`` (nibabel has some): see :func:`raise_if_signalled`
_received: list[int] = []


def _raise(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def raise_if_signalled() -> None:
    """Raise :class:`Interrupted` if a signal came under :func:`signals_raise`, even one whose exception was lost."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def signals_raise(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the given signals raise :class:`Interrupted`; the old handlers come back after.

    Only the main thread can set handlers; elsewhere the block runs with the handlers as they are.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _raise) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()


@contextlib.contextmanager
def signals_deferred(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the given signals are only noted; the first one is raised again when the block ends.

    The signal then meets the handler it would have met (:class:`Interrupted` under :func:`signals_raise`,
    the default action otherwise). Handlers run in the main thread whichever thread the kernel picked, so
    this holds with worker threads around; elsewhere than the main thread the block runs as is.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {s: h for s in signums if (h := signal.getsignal(s)) is not None}  # None: set in C, not restorable
    for s in previous:
        signal.signal(s, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if noted:
            signal.raise_signal(noted[0])


def stop_worker_pools() -> None:
    """Kill the loky (joblib) worker processes this process started, if it started any.

    joblib keeps its loky workers alive between calls (the reusable executor); an interrupted
    command must not leave them behind. Nothing is imported that was not imported already.
    """
    reusable = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(reusable, "_executor", None)
    if executor is None:
        return
    with contextlib.suppress(Exception):
        executor.shutdown(wait=True, kill_workers=True)
