"""What the home page says of a server: profile, backend, state, choices, time left, and a link to start it again."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.config.user_choices import CHOICE_KEYS
from hpclab_hub.spawner.form import resources_text


def relaunch_url(deployment: Deployment, options: dict[str, Any], base_url: str, user_name: str, server_name: str) -> str:
    """A link that fills the form with the same profile and choices again ('' if the server never started)."""
    if not options.get("profile") or deployment.profile(str(options["profile"])) is None:
        return ""
    query = {f"opt-{key}": options[key] for key in ("profile", *CHOICE_KEYS) if key in options}
    path = f"{base_url}spawn/{user_name}" + (f"/{server_name}" if server_name else "")
    return f"{path}?{urlencode(query)}"


def choices_text(effective: Profile, user_choices: dict[str, Any], extended_seconds: int) -> str:
    """The resources the server runs with (extensions included) and the SLURM settings the user chose."""
    if extended_seconds and effective.time_limit:  # the wall time it runs with now, extensions included
        effective = effective.model_copy(update={"time_limit": effective.time_limit + extended_seconds})
    text = resources_text(effective)
    slurm = effective.slurm
    text += "".join(
        f", {key} {getattr(slurm, key)}"
        for key in ("partition", "account", "qos", "reservation")
        if key in user_choices and slurm is not None
    )
    return text


def state_text(ready: bool, pending: str | None, running_note: str, end_reason: str) -> str:
    """'running (SLURM job 12)', 'starting', 'stopped: the server reached its time limit …'."""
    if ready:
        return "running" + (f" ({running_note})" if running_note else "")
    if pending:
        return "starting" if pending == "spawn" else pending
    return "stopped" + (f": {end_reason}" if end_reason else "")


def backend_text(profile: Profile | None, label: str) -> str:
    """'cluster (SLURM cluster)' or 'local (this server)': the backend's name and its ``ServerBackend.label``."""
    return f"{profile.backend} ({label})" if profile is not None else ""


def summary(
    label: str,
    profile: Profile | None,
    effective: Profile | None,
    user_choices: dict[str, Any],
    extended_seconds: int,
    state: str,
    relaunch: str,
    time_left: str,
) -> dict[str, str]:
    """The home page's row for a server (``home.html``)."""
    return {
        "choices": choices_text(effective, user_choices, extended_seconds) if effective is not None and user_choices else "",
        "relaunch": relaunch,
        "profile": profile.display_name if profile else "",
        "backend": backend_text(profile, label),
        "state": state,
        "time_left": time_left,
    }


def server_summary(spawner: Any) -> dict[str, str]:
    """The home page's row for one of HPCLabSpawner's servers."""
    profile = spawner.deployment.profile(spawner.profile_slug) if spawner.profile_slug else None
    backend = spawner.server_backend
    note = backend.running_note() if spawner.ready else ""
    state = state_text(spawner.ready, spawner.pending, note, spawner.end_reason)
    effective = spawner.effective_profile() if profile else None
    options = dict(getattr(getattr(spawner, "orm_spawner", None), "user_options", None) or {})
    base = spawner.hub.base_url if getattr(spawner, "hub", None) else "/hub/"
    user, server = spawner.user.name, spawner.name
    relaunch = "" if spawner.active else relaunch_url(spawner.deployment, options, base, user, server)
    left = spawner.time_left_text or ("no limit" if spawner.ready else "")
    return summary(backend.label, profile, effective, spawner.user_choices, spawner.extended_seconds, state, relaunch, left)
