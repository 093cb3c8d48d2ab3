"""Which profiles a user may see and start: the one place authorisation is decided."""

from __future__ import annotations

from collections.abc import Iterable

from hpclab_hub.config.model import Deployment, Profile


class ProfileRefused(Exception):
    """A profile request that must not be served (unknown slug, or groups not allowed)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def groups_of(username: str, deployment: Deployment, hub_groups: Iterable[str] = ()) -> frozenset[str]:
    """A user's groups: the YAML's ``auth.groups`` plus groups an external identity provider set in the hub."""
    from_yaml = {group for group, members in deployment.auth.groups.items() if username in members}
    return frozenset(from_yaml | set(hub_groups))


def may_use(profile: Profile, groups: frozenset[str]) -> bool:
    """True if the profile is open to everyone or shares a group with the user."""
    return not profile.groups or bool(groups.intersection(profile.groups))


def visible_profiles(deployment: Deployment, groups: frozenset[str]) -> list[Profile]:
    """Profiles to show on this user's spawn form, in YAML order."""
    return [p for p in deployment.profiles if may_use(p, groups)]


def choose_profile(deployment: Deployment, slug: str | None, groups: frozenset[str]) -> Profile:
    """The profile to start for a request: the named one if allowed, else the user's default; never a forbidden one."""
    allowed = visible_profiles(deployment, groups)
    if not allowed:
        raise ProfileRefused("No profile is available to your groups; ask an administrator for access.")
    if not slug:
        return next((p for p in allowed if p.default), allowed[0])
    profile = deployment.profile(slug)
    if profile is None:
        raise ProfileRefused(f"Unknown profile {slug!r}.", status=400)
    if profile not in allowed:
        needed = ", ".join(profile.groups)
        raise ProfileRefused(f"Profile {slug!r} is restricted to the groups: {needed}.")
    return profile


def last_profile(user) -> str:
    """The profile this user chose most recently for any of their servers, '' if none.

    Read from each server's stored state (its profile and when it was chosen), so the form remembers
    the last choice across servers and hub restarts without a store of its own.
    """
    latest, latest_time = "", 0.0
    for orm_spawner in getattr(user, "orm_user", user).orm_spawners.values():
        state = orm_spawner.state or {}
        when = float(state.get("chosen_at") or 0)
        if state.get("profile") and when > latest_time:
            latest, latest_time = str(state["profile"]), when
    return latest
