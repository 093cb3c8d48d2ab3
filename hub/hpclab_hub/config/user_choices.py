"""Apply a user's choices to a profile: parse each value, check it against the admin's bounds, refuse clearly.

The same rules serve the form and the REST API (``user_options``), before anything is held or
submitted: a value out of bounds, a key the profile does not offer, or a name the cluster does not
let this user use is a 400 that names the key and the bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hpclab_hub.config.choices import ProfileChoices
from hpclab_hub.config.model import Profile, ProfileSlurmOverrides
from hpclab_hub.config.units import format_duration, format_memory, parse_duration, parse_memory

#: user_options keys a profile may offer, in form order.
CHOICE_KEYS = ("cpus", "memory", "gpus", "time_limit", "partition", "account", "qos", "reservation", "gpu_type")
NUMERIC_KEYS = ("cpus", "memory", "gpus", "time_limit")
SLURM_KEYS = ("partition", "account", "qos", "reservation", "gpu_type")
#: every user_options key a start may carry: the profile and the choices (anything else is a mistake, refused).
OPTION_KEYS = ("profile", *CHOICE_KEYS)
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


class ChoiceRefused(ValueError):
    """A choice that cannot be honoured; ``key`` names it (the message starts with it)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass
class ClusterOptions:
    """What the cluster lets this user pick where the YAML defers to it (None: not asked)."""

    accounts: list[str] | None = None
    reservations: list[str] | None = None
    gpu_types: dict[str, list[str]] = field(default_factory=dict)  # partition -> GRES types
    errors: dict[str, str] = field(default_factory=dict)  # key -> why the cluster could not answer


def choice_text(key: str, value: int) -> str:
    if key == "memory":
        return format_memory(value)
    if key == "time_limit":
        return format_duration(value)
    return str(value)


def parse_choice(key: str, raw: Any) -> Any:
    """The typed value of one choice (int cores/GPUs, bytes, seconds, or a name); ChoiceRefused if malformed."""
    if isinstance(raw, list):  # form data arrives as lists
        raw = raw[0] if raw else ""
    try:
        if key in ("cpus", "gpus"):
            if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).strip().lstrip("-").isdigit():
                raise ValueError("must be a whole number")
            return int(str(raw).strip())
        if key == "memory":
            return parse_memory(raw.strip() if isinstance(raw, str) else raw)
        if key == "time_limit":
            return parse_duration(raw.strip() if isinstance(raw, str) else raw)
    except ValueError as error:
        raise ChoiceRefused(key, f"{str(raw)[:40]!r} is not valid ({error})") from None
    if not isinstance(raw, str) or not _NAME.match(raw.strip()):
        raise ChoiceRefused(key, f"{str(raw)[:40]!r} is not a valid name")
    return raw.strip()


def check_bound(key: str, value: Any, bound: Any, cluster: ClusterOptions, partition: str | None) -> None:
    if key in NUMERIC_KEYS:
        if isinstance(bound, list):
            if value not in bound:
                values = ", ".join(choice_text(key, v) for v in bound)
                raise ChoiceRefused(key, f"{choice_text(key, value)} is not one of the allowed values ({values})")
        elif value < bound.min:
            raise ChoiceRefused(key, f"{choice_text(key, value)} is below the minimum {choice_text(key, bound.min)}")
        elif value > bound.max:
            raise ChoiceRefused(key, f"{choice_text(key, value)} is above the maximum {choice_text(key, bound.max)}")
        return
    allowed: list[str] | None
    if bound == "associations":
        allowed = cluster.accounts
    elif bound == "active":
        allowed = cluster.reservations
    elif bound == "partition":
        allowed = cluster.gpu_types.get(partition or "", [])
    else:
        allowed = list(bound)
    if allowed is None:
        raise ChoiceRefused(key, cluster.errors.get(key, "the cluster did not say which values you may use"))
    if value not in allowed:
        listed = ", ".join(allowed) or "none"
        raise ChoiceRefused(key, f"{value!r} is not one you may use (allowed: {listed})")


def requested_choices(user_options: dict) -> dict[str, Any]:
    """The choice keys present in user_options (empty values left out)."""
    return {key: user_options[key] for key in CHOICE_KEYS if user_options.get(key) not in (None, "", [])}


def refuse_unknown_keys(profile: Profile, user_options: dict) -> None:
    """ChoiceRefused naming the first key of ``user_options`` that no start understands (``cores`` for ``cpus``).

    A misspelt key would otherwise be dropped and the server started with the defaults. The message
    lists the keys ``profile`` accepts.
    """
    unknown = sorted(str(key)[:64] for key in user_options if key not in OPTION_KEYS)
    if not unknown:
        return
    accepted = ", ".join(["profile", *(profile.choices.offered() if profile.choices else [])])
    others = f" (nor is {', '.join(unknown[1:6])}{', ...' if len(unknown) > 6 else ''})" if len(unknown) > 1 else ""
    raise ChoiceRefused(unknown[0], f"not an option{others}; profile {profile.slug!r} accepts: {accepted}")


def validate_choices(profile: Profile, user_options: dict, cluster: ClusterOptions | None = None) -> dict[str, Any]:
    """The user's choices for ``profile``, parsed and checked against its bounds (ChoiceRefused otherwise).

    A key that is neither ``profile`` nor a choice is refused first (see ``refuse_unknown_keys``).
    """
    refuse_unknown_keys(profile, user_options)
    asked = requested_choices(user_options)
    offered: ProfileChoices | None = profile.choices
    chosen: dict[str, Any] = {}
    for key, raw in asked.items():
        bound = getattr(offered, key, None) if offered else None
        if bound is None:
            raise ChoiceRefused(key, f"profile {profile.slug!r} does not let you choose this")
        chosen[key] = parse_choice(key, raw)
    partition = chosen.get("partition") or (profile.slurm.partition if profile.slurm else None)
    for key, value in chosen.items():
        check_bound(key, value, getattr(offered, key), cluster or ClusterOptions(), partition)
    return chosen


def with_choices(profile: Profile, chosen: dict[str, Any]) -> Profile:
    """The profile as this server runs it: its own values replaced by the user's (already validated) choices."""
    if not chosen:
        return profile
    top = {key: chosen[key] for key in NUMERIC_KEYS if key in chosen}
    slurm = {key: chosen[key] for key in SLURM_KEYS if key in chosen}
    if slurm:
        top["slurm"] = (profile.slurm or ProfileSlurmOverrides()).model_copy(update=slurm)
    return profile.model_copy(update=top)


def stored_form(chosen: dict[str, Any]) -> dict[str, Any]:
    """Choices as user_options keep them (JSON, readable): memory '8G', time '01:00:00', the rest as is."""
    return {key: choice_text(key, value) if key in ("memory", "time_limit") else value for key, value in chosen.items()}


def longest_time(profile: Profile) -> int | None:
    """The most wall time a server of ``profile`` may have (its choice's maximum, else its own limit)."""
    bound = profile.choices.time_limit if profile.choices else None
    if bound is None:
        return profile.time_limit
    return max(bound) if isinstance(bound, list) else bound.max
