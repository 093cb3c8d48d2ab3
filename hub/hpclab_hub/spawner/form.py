"""Render the spawn form from the profiles a user may use, and read the choice back."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jinja2

from hpclab.apps import APPS
from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.config.units import format_duration, format_memory
from hpclab_hub.config.user_choices import CHOICE_KEYS, NUMERIC_KEYS
from hpclab_hub.config.user_choices import choice_text as _text


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hpclab_hub.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _memory_text(size: int) -> str:
    return format_memory(size).replace("G", " GB").replace("M", " MB").replace("T", " TB").replace("K", " KB")


def site_branding(deployment: Deployment) -> dict[str, str]:
    """The site's name for the form's heading (the logo is JupyterHub's own, from hub.logo)."""
    return {"site_name": deployment.hub.site_name}


def _resource_parts(profile: Profile) -> list[str]:
    parts = [f"{profile.cpus} core{'s' if profile.cpus != 1 else ''}"]
    if profile.memory:
        parts.append(f"{_memory_text(profile.memory)} memory")
    if profile.gpus:
        parts.append(f"{profile.gpus} GPU{'s' if profile.gpus != 1 else ''}")
    if profile.time_limit:
        parts.append(f"up to {format_duration(profile.time_limit)}")
    return parts


def resources_text(profile: Profile) -> str:
    """'2 cores, 8 GB memory, 1 GPU, up to 04:00:00' — what the profile holds, said once."""
    return ", ".join(_resource_parts(profile))


def apps_text(profile: Profile) -> str:
    """'Apps: TensorBoard, VS Code' — the launcher tiles a server of this profile gets ('' for none)."""
    return "Apps: " + ", ".join(APPS[name][0] for name in profile.apps) if profile.apps else ""


def _normalised(text: str) -> str:
    """Text reduced for comparing resource mentions: lower case, '2G'/'2 GiB'/'2 GB' alike, no plurals or 'memory'."""
    text = text.lower().replace(",", " ")
    text = re.sub(r"(\d+(?:\.\d+)?)\s*([kmgt])(?:i?b)?\b", r"\1 \2b", text)
    text = re.sub(r"\b(core|cpu|gpu)s\b", r"\1", text)
    text = re.sub(r"\b(memory|ram)\b", " ", text)
    return " ".join(text.split())


def unsaid_resources(profile: Profile) -> str:
    """The profile's resources its display name does not already say ('' if it says them all).

    Older YAMLs put them in the name ("CPU — 1 core, 2 GB"); the form then shows only the rest,
    so nothing is said twice.
    """
    name = _normalised(profile.display_name)
    unsaid = [
        part for part in _resource_parts(profile) if not re.search(rf"(?<![\d.]){re.escape(_normalised(part))}(?![\w.])", name)
    ]
    return ", ".join(unsaid)


_LABELS = {
    "cpus": "Cores",
    "memory": "Memory",
    "gpus": "GPUs",
    "time_limit": "Wall time",
    "partition": "Partition",
    "account": "Account",
    "qos": "QoS",
    "reservation": "Reservation",
    "gpu_type": "GPU type",
}


def choice_fields(profile: Profile, cluster=None) -> list[dict]:
    """The form fields of a profile's choices: name, label, default, bounds, and options for lists."""

    choices = profile.choices
    if choices is None:
        return []
    fields = []
    for key in choices.offered():
        bound = getattr(choices, key)
        field = {"key": key, "name": f"{profile.slug}--{key}", "label": _LABELS[key], "options": [], "hint": ""}
        if key in NUMERIC_KEYS:
            default = getattr(profile, key)
            field["default"] = _text(key, default)
            if isinstance(bound, list):
                field["options"] = [_text(key, v) for v in bound]
            elif key in ("cpus", "gpus"):
                field.update(kind="number", min=bound.min, max=bound.max)
                field["hint"] = f"{bound.min}–{bound.max}"
            else:
                field.update(kind="text", min=_text(key, bound.min), max=_text(key, bound.max))
                field["hint"] = f"{_text(key, bound.min)} to {_text(key, bound.max)}" + (
                    " (HH:MM:SS)" if key == "time_limit" else ""
                )
        else:
            slurm = profile.slurm
            field["default"] = (getattr(slurm, key, None) if slurm else None) or ""
            if isinstance(bound, list):
                field["options"] = list(bound)
            elif cluster is not None:
                listed = {"associations": cluster.accounts, "active": cluster.reservations}.get(bound)
                if bound == "partition":
                    listed = cluster.gpu_types.get(field["default"] or (slurm.partition if slurm else "") or "", [])
                field["options"] = list(listed or [])
                field["hint"] = cluster.errors.get(key, "" if listed else "none available to you now")
            if key in ("reservation", "account", "qos", "gpu_type"):
                field["options"] = [""] + [o for o in field["options"] if o]  # "" = none (the profile's default)
        fields.append(field)
    return fields


def render_profile_form(
    profiles: list[Profile],
    selected: str | None = None,
    availability: dict | None = None,
    branding: dict[str, str] | None = None,
    cluster_options: dict | None = None,
    link_choices: dict[str, str] | None = None,
    link_profile: str | None = None,
) -> str:
    """HTML for JupyterHub's spawn page: one radio choice per allowed profile.

    ``availability`` maps a slug to an Availability: its live line (free cores and GPUs now) and, for
    a profile that cannot start on its backend, the reason it is shown disabled. ``selected`` (a
    link's preselection or the user's last choice) is checked if it can start; else the default.
    ``link_choices`` (a spawn link's ``opt-`` values; None when no link) fill in the selected profile's
    fields, and the form says that nothing starts until the user presses Start; where the link's profile
    (``link_profile``) is not the one selected, it also says why (not offered to this user, or blocked now).
    """
    availability = availability or {}
    rows: list[dict[str, Any]] = []
    for p in profiles:
        live = availability.get(p.slug)
        rows.append(
            {
                "slug": p.slug,
                "display_name": p.display_name,
                "description": p.description,
                "resources": unsaid_resources(p),
                "apps": apps_text(p),
                "note": live.note if live else "",
                "blocked": live.blocked if live else "",
                "choices": choice_fields(p, (cluster_options or {}).get(p.slug)),
            }
        )
    startable = [row["slug"] for row in rows if not row["blocked"]]
    if selected not in startable:
        default = next((p.slug for p in profiles if p.default), None)
        selected = default if default in startable else (startable[0] if startable else None)
    for row in rows:
        if row["slug"] == selected and link_choices:
            row["choices"] = [_filled_in(c, link_choices.get(c["key"])) for c in row["choices"]]
    site_name = (branding or {}).get("site_name", "HPCLab")
    return (
        _environment()
        .get_template("profile_form.html")
        .render(
            profiles=rows,
            selected=selected,
            site_name=site_name,
            from_link=link_choices is not None,
            link_refused=_link_refused(rows, link_profile, selected),
        )
    )


def _link_refused(rows: list[dict[str, Any]], asked: str | None, selected: str | None) -> str:
    """Why a link's profile is not the one selected ('' when it is, or when no link asked for one)."""
    if not asked or asked == selected:
        return ""
    row = next((r for r in rows if r["slug"] == asked), None)
    if row is None:
        return f"The link asked for the profile {asked}, which your account may not use; another is selected."
    return f"The link asked for {row['display_name']}, which cannot start now: {row['blocked']}"


def _filled_in(field: dict, value: str | None) -> dict:
    """A choice field with a link's value as its default (a list keeps its own default if the value is not offered)."""
    if not value or (field.get("options") and value not in field["options"]):
        return field
    return {**field, "default": value}


def profile_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
    """user_options from the posted form or a link's query: the slug and that profile's choices.

    A choice is read from the chosen profile's own field (``<slug>--cpus``) or, for links, a plain
    ``cpus``; everything is validated later, for the form and the REST API alike. A field the form
    never has (``cores``, ``<slug>--cores``, ``opt-cores`` in a link) is passed on under its own
    name, so that the start refuses it instead of silently using the defaults; JupyterHub's
    ``_xsrf`` and the other profiles' fields are the form's own and are left out.
    """

    def first(key: str) -> str:
        values = formdata.get(key) or [""]
        return str(values[0]).strip()

    unknown = {}
    for name, values in formdata.items():
        key = name.rsplit("--", 1)[1] if "--" in name else name
        if name not in _FORM_OWN_FIELDS and key not in CHOICE_KEYS:
            unknown[str(name)[:64]] = str(values[0])[:200] if isinstance(values, list) and values else str(values)[:200]
    slug = first("profile")
    if not slug:
        return unknown
    options = {"profile": slug}
    for key in CHOICE_KEYS:
        value = first(f"{slug}--{key}") or first(key)
        if value:
            options[key] = value
    return {**options, **unknown}


#: fields a posted form or a spawn link carries that are not choices (JupyterHub's own, and the profile).
_FORM_OWN_FIELDS = frozenset({"_xsrf", "profile", "hpclab-profile"})
