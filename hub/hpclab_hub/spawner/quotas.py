"""Quotas: may this spawn start, given what is already running or starting? Pure, so tests can drive it."""

from __future__ import annotations

from dataclasses import dataclass

from hpclab_hub.config.model import Profile, QuotaLimits, QuotaSettings
from hpclab_hub.config.units import format_memory


@dataclass(frozen=True)
class ActiveServer:
    """A server that is running or starting, with what it holds."""

    user: str
    groups: frozenset[str]
    profile: str
    cpus: int
    gpus: int
    memory: int = 0  # bytes of memory limit; 0 = none


class QuotaExceeded(Exception):
    """The spawn would exceed a quota; the message says which and what is in use."""


def _check(label: str, limits: QuotaLimits | None, used: list[ActiveServer], profile: Profile) -> None:
    if limits is None:
        return
    totals = {
        "servers": len(used),
        "gpus": sum(s.gpus for s in used),
        "cpus": sum(s.cpus for s in used),
        "memory": sum(s.memory for s in used),
    }
    asked = {"servers": 1, "gpus": profile.gpus, "cpus": profile.cpus, "memory": profile.memory or 0}
    nouns = {"servers": "servers", "gpus": "GPUs", "cpus": "cores", "memory": "of memory"}
    for key in ("gpus", "cpus", "memory", "servers"):
        limit = getattr(limits, key)
        if limit is not None and asked[key] and totals[key] + asked[key] > limit:
            if key == "memory":
                raise QuotaExceeded(
                    f"{label}: {format_memory(totals[key])} of {format_memory(limit)} of memory in use; "
                    f"this profile needs {format_memory(asked[key])} more."
                )
            raise QuotaExceeded(f"{label}: {totals[key]} of {limit} {nouns[key]} in use; this profile needs {asked[key]} more.")


def check_quotas(
    quotas: QuotaSettings, user: str, groups: frozenset[str], is_admin: bool, profile: Profile, active: list[ActiveServer]
) -> None:
    """Raise QuotaExceeded if starting ``profile`` for ``user`` breaks a user, group or profile quota."""
    if is_admin and quotas.admins_exempt:
        return
    _check(f"your quota ({user})", quotas.users.get(user, quotas.per_user), [s for s in active if s.user == user], profile)
    for group in sorted(groups):
        if group in quotas.groups:
            _check(group, quotas.groups[group], [s for s in active if group in s.groups], profile)
    if profile.slug in quotas.profiles:
        _check(
            f"profile {profile.slug}", quotas.profiles[profile.slug], [s for s in active if s.profile == profile.slug], profile
        )
