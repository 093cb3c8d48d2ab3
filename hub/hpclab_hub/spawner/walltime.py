"""A server's wall time: how long it may run now, how far it may be extended, and the time left in words."""

from __future__ import annotations

import time
from typing import Any, Protocol

from tornado import web

from hpclab_hub.backends import ServerBackend
from hpclab_hub.config.model import Profile
from hpclab_hub.config.units import format_duration
from hpclab_hub.config.user_choices import longest_time


def walltime_bounds(
    profile: Profile, extended_seconds: int, cap_seconds: int, cap_source: str
) -> tuple[int | None, int | None, str]:
    """(current wall time with extensions, the most it may become, what sets the most); None without a limit.

    The most is the profile's maximum, or the cluster's cap (partition MaxTime, QoS MaxWall) where
    that is lower: SLURM would refuse, or silently exceed, what the QoS does not allow.
    """
    if not profile.time_limit:
        return None, None, ""
    longest, source = longest_time(profile) or profile.time_limit, "this profile's maximum"
    if cap_seconds and cap_seconds < longest:
        longest, source = cap_seconds, cap_source or "the cluster's limit"
    return profile.time_limit + extended_seconds, max(longest, profile.time_limit), source


def check_minutes(minutes: object) -> int:
    """The minutes an extension asks for, or 400 with what is allowed."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 7 * 24 * 60:
        raise web.HTTPError(400, "minutes: a whole number of minutes between 1 and 10080")
    return minutes


def extended_walltime(bounds: tuple[int | None, int | None, str], minutes: int) -> int:
    """The wall time after adding ``minutes``, or 400 saying how much may still be added."""
    current, longest, source = bounds
    if current is None or longest is None:
        raise web.HTTPError(400, "minutes: this server has no wall time to extend")
    wanted = current + minutes * 60
    if wanted > longest:
        raise web.HTTPError(
            400,
            f"minutes: {minutes} more would make the wall time {format_duration(wanted)}, past {source} "
            f"{format_duration(longest)} ({format_duration(max(0, longest - current))} may still be added)",
        )
    return wanted


def time_left_text(end_epoch: float) -> str:
    """'1 h 05 min left (ends 14:05 UTC)' for the home page, '' without a limit."""
    if not end_epoch:
        return ""
    left = max(0, int(end_epoch - time.time()))
    hours, minutes = divmod(left // 60, 60)
    ends = time.strftime("%H:%M UTC", time.gmtime(end_epoch))
    span = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {left % 60:02d} s"
    return f"{span} left (ends {ends})"


class Extendable(Protocol):
    """What an extension changes on a server (HPCLabSpawner)."""

    log: Any
    job_end_epoch: float
    extended_seconds: int

    @property
    def ready(self) -> bool: ...
    @property
    def log_name(self) -> str: ...
    @property
    def server_backend(self) -> ServerBackend: ...
    def _walltime_bounds(self) -> tuple[int | None, int | None, str]: ...
    def save_state(self) -> None: ...


async def extend(server: Extendable, minutes: object) -> float:
    """Add ``minutes`` to a running server's wall time, within its profile's maximum and the cluster's cap; the new end.

    On SLURM the job's limit is raised (``scontrol update``, the hub's operator rights); on a local
    backend the hub moves its own deadline (and the early save signal with it).
    """
    added = check_minutes(minutes)
    if not server.ready:
        raise web.HTTPError(409, "The server is not running.")
    if not server.job_end_epoch:
        raise web.HTTPError(400, "minutes: this server has no wall time to extend")
    wanted = extended_walltime(server._walltime_bounds(), added)
    await server.server_backend.extend(wanted)
    server.extended_seconds += added * 60
    server.job_end_epoch += added * 60
    server.save_state()
    ends = time.strftime("%H:%M:%S UTC", time.gmtime(server.job_end_epoch))
    server.log.info("Extended %s by %d min: wall time %s, ends %s", server.log_name, added, format_duration(wanted), ends)
    return server.job_end_epoch
