"""The spawn form's inputs: the profile and choices a link asked for, and what the cluster lets a user pick.

A start link (``/hub/spawn/alice?profile=gpu&opt-cpus=4``) only fills in the form: the user presses
Start, and the POST is checked like any other.
"""

from __future__ import annotations

from typing import Any

from hpclab_hub.backends import Availability
from hpclab_hub.backends.slurm.client import SlurmClient, cluster_options
from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.config.user_choices import CHOICE_KEYS, ClusterOptions
from hpclab_hub.spawner.access import last_profile, visible_profiles
from hpclab_hub.spawner.form import render_profile_form, site_branding


def requested_profile(handler: Any, user: Any) -> str:
    """The profile a link asked to preselect, else the last choice.

    A link asks with ``?profile=SLUG``; a refused start comes back with ``?opt-profile=SLUG``.
    """
    if handler is not None:
        asked = (
            handler.get_argument("profile", "")
            or handler.get_argument("hpclab-profile", "")
            or handler.get_argument("opt-profile", "")
        )  # a start link whose start was refused
        if asked:
            return str(asked)
    return last_profile(user)


def link_choices(handler: Any) -> dict[str, str] | None:
    """The choices a spawn link carried (``?opt-cpus=4`` or ``?cpus=4``, with or without a profile); None for no link."""
    if handler is None or handler.request.method != "GET":
        return None
    arguments = handler.request.query_arguments
    if not any(name == "profile" or name.startswith("opt-") for name in arguments):
        return None
    return {
        key: value for key in CHOICE_KEYS if (value := handler.get_argument(f"opt-{key}", "") or handler.get_argument(key, ""))
    }


def deferred_choices(deployment: Deployment, profile: Profile) -> set[str]:
    """The choices of ``profile`` whose allowed values the cluster gives (SLURM profiles only: a rule of the YAML's
    backend settings, read before any server or backend object exists)."""
    choices = profile.choices
    if choices is None or deployment.backends[profile.backend].type != "slurm":
        return set()
    return {
        key
        for key, word in (("account", "associations"), ("reservation", "active"), ("gpu_type", "partition"))
        if getattr(choices, key) == word
    }


async def _ask_cluster(deployment: Deployment, backend_name: str, user_name: str, wanted: set[str]) -> ClusterOptions:
    client = SlurmClient.for_backend(deployment.backends[backend_name])
    return await cluster_options(client, user_name, wanted)


async def cluster_options_for(deployment: Deployment, profile: Profile, user_name: str) -> ClusterOptions | None:
    """What the cluster lets this user pick where the profile's choices defer to it; None when none do."""
    wanted = deferred_choices(deployment, profile)
    return await _ask_cluster(deployment, profile.backend, user_name, wanted) if wanted else None


async def cluster_options_by_profile(deployment: Deployment, profiles: list[Profile], user_name: str) -> dict[str, Any]:
    """The form's cluster answers: one set of SLURM calls per backend, shared by its profiles."""
    wanted: dict[str, set[str]] = {}
    for profile in profiles:
        wanted.setdefault(profile.backend, set()).update(deferred_choices(deployment, profile))
    answers = {name: await _ask_cluster(deployment, name, user_name, keys) for name, keys in wanted.items() if keys}
    return {p.slug: answers.get(p.backend) if deferred_choices(deployment, p) else None for p in profiles}


async def render_form(
    deployment: Deployment,
    user: Any,
    groups: frozenset[str],
    handler: Any,
    availability: dict[str, Availability],
) -> str:
    """The spawn form for this user: allowed profiles, live availability, the preselected one checked, a link's choices."""
    profiles = visible_profiles(deployment, groups)
    cluster = await cluster_options_by_profile(deployment, profiles, user.name)
    selected = requested_profile(handler, user)
    from_link = link_choices(handler)
    link_profile = (
        handler.get_argument("profile", "") or handler.get_argument("opt-profile", "") if from_link is not None else None
    )
    return render_profile_form(
        profiles,
        selected=selected,
        availability=availability,
        branding=site_branding(deployment),
        cluster_options=cluster,
        link_choices=from_link,
        link_profile=link_profile,
    )
