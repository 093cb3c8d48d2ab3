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


def backend_text(deployment: Deployment, profile: Profile | None) -> str:
    """'cluster (SLURM cluster)' or 'local (this server)'."""
    if profile is None:
        return ""
    kind = deployment.backends[profile.backend].type
    return f"{profile.backend} ({'SLURM cluster' if kind == 'slurm' else 'this server'})"


def summary(
    deployment: Deployment,
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
        "backend": backend_text(deployment, profile),
        "state": state,
        "time_left": time_left,
    }
