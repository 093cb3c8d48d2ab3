"""Whether a start may go ahead, asked before anything is held or submitted: profile, choices, backend, quotas.

The same checks for the form and the REST API: a forged form, a profile the user's groups do not
allow, a choice out of bounds, a partition that is down, or a quota already full is refused with a
reason the user can act on, and counted (``hpclab_spawn_failures_total``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hpclab_hub.backends import Refusals
from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.config.user_choices import ChoiceRefused, ClusterOptions, validate_choices, with_choices
from hpclab_hub.ops import metrics
from hpclab_hub.spawner.access import ProfileRefused, choose_profile, groups_of
from hpclab_hub.spawner.quotas import ActiveServer, QuotaExceeded, check_quotas
from hpclab_hub.spawner.refusal import refusal


@dataclass(frozen=True)
class Authorised:
    """A start that may go ahead: the YAML's profile, the user's validated choices, the profile they make."""

    base: Profile
    chosen: dict[str, Any]
    profile: Profile
    refusals: Refusals


@dataclass(frozen=True)
class Requester:
    """Who asks: name, groups, admin, for log lines and quotas."""

    name: str
    log_name: str
    groups: frozenset[str]
    admin: bool


async def authorise(
    deployment: Deployment,
    who: Requester,
    user_options: dict[str, Any],
    cluster_options: Callable[[Profile], Awaitable[ClusterOptions | None]],
    refusals: Callable[[Profile], Awaitable[Refusals]],
    active: Callable[[], list[ActiveServer]],
    log: Any,
) -> Authorised:
    """The profile and choices asked for, checked in order: access, choices, the backend's refusals, quotas."""
    requested = (user_options or {}).get("profile") or ""
    try:
        base = choose_profile(deployment, requested, who.groups)
    except ProfileRefused as refused:
        log.warning("Refused profile for %s: %s", who.log_name, refused)
        metrics.SPAWN_FAILURES.labels(requested or "(default)", "forbidden" if refused.status == 403 else "unknown_profile").inc()
        raise refusal(refused.status, str(refused)) from None
    try:
        chosen = validate_choices(base, user_options or {}, await cluster_options(base))
    except ChoiceRefused as refused:
        log.warning("Refused choice for %s: %s", who.log_name, refused)
        metrics.SPAWN_FAILURES.labels(base.slug, "choice").inc()
        raise refusal(400, f"Profile {base.slug!r}: {refused}") from None
    profile = with_choices(base, chosen)
    found = await refusals(profile)
    if found.blocked:
        metrics.SPAWN_FAILURES.labels(profile.slug, "unavailable").inc()
        raise refusal(400, f"Profile {profile.slug!r} cannot start here: {found.blocked}")
    if found.too_long:
        log.warning("Refused choice for %s: %s", who.log_name, found.too_long)
        metrics.SPAWN_FAILURES.labels(profile.slug, "choice").inc()
        raise refusal(400, f"Profile {profile.slug!r}: {found.too_long}")
    try:
        check_quotas(deployment.quotas, who.name, who.groups, who.admin, profile, active())
    except QuotaExceeded as exceeded:
        log.info("Quota refused %s: %s", who.log_name, exceeded)
        metrics.SPAWN_FAILURES.labels(profile.slug, "quota").inc()
        raise refusal(429, f"{exceeded} Stop one of your servers on the home page first.") from None
    return Authorised(base, chosen, profile, found)


def active_servers(deployment: Deployment, users: Iterable[Any], skip: object = None) -> list[ActiveServer]:
    """Every server of this hub that is running or starting (except ``skip``), with its profile's resources."""
    active = []
    for user in users:
        for spawner in user.spawners.values():
            if spawner is skip or not getattr(spawner, "profile_slug", ""):
                continue
            if not (spawner.active or getattr(spawner, "_start_pending", False)):
                continue
            profile = spawner.effective_profile() if deployment.profile(spawner.profile_slug) else None
            if profile is not None:
                groups = groups_of(user.name, deployment, (g.name for g in user.groups))
                active.append(ActiveServer(user.name, groups, profile.slug, profile.cpus, profile.gpus, profile.memory or 0))
    return active
