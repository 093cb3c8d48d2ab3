"""Render the spawn form from the profiles a user may use, and read the choice back."""

from __future__ import annotations

from functools import lru_cache

import jinja2

from .config.model import Deployment, Profile
from .config.units import format_duration, format_memory


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hpclab_spawners", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _memory_text(size: int) -> str:
    return format_memory(size).replace("G", " GB").replace("M", " MB").replace("T", " TB").replace("K", " KB")


def site_branding(deployment: Deployment) -> dict[str, str]:
    """The site's name for the form's heading (the logo is JupyterHub's own, from hub.logo)."""
    return {"site_name": deployment.hub.site_name}


def resources_text(profile: Profile) -> str:
    """'2 cores, 8 GB memory, 1 GPU, up to 4 h' — what the profile holds, said once."""
    parts = [f"{profile.cpus} core{'s' if profile.cpus != 1 else ''}"]
    if profile.memory:
        parts.append(f"{_memory_text(profile.memory)} memory")
    if profile.gpus:
        parts.append(f"{profile.gpus} GPU{'s' if profile.gpus != 1 else ''}")
    if profile.time_limit:
        parts.append(f"up to {format_duration(profile.time_limit)}")
    return ", ".join(parts)


def render_profile_form(
    profiles: list[Profile],
    selected: str | None = None,
    availability: dict | None = None,
    branding: dict[str, str] | None = None,
) -> str:
    """HTML for JupyterHub's spawn page: one radio choice per allowed profile.

    ``availability`` maps a slug to an Availability: its live line (free cores and GPUs now) and, for
    a profile that cannot start on its backend, the reason it is shown disabled. ``selected`` (a
    link's preselection or the user's last choice) is checked if it can start; else the default.
    """
    availability = availability or {}
    rows = []
    for p in profiles:
        live = availability.get(p.slug)
        rows.append({
            "slug": p.slug,
            "display_name": p.display_name,
            "description": p.description,
            "resources": resources_text(p),
            "note": live.note if live else "",
            "blocked": live.blocked if live else "",
        })
    startable = [row["slug"] for row in rows if not row["blocked"]]
    if selected not in startable:
        default = next((p.slug for p in profiles if p.default), None)
        selected = default if default in startable else (startable[0] if startable else None)
    site_name = (branding or {}).get("site_name", "HPCLab")
    return _environment().get_template("profile_form.html").render(profiles=rows, selected=selected, site_name=site_name)


def profile_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
    """user_options from the posted form: just the chosen slug (validated later, for form and API alike)."""
    values = formdata.get("profile") or [""]
    return {"profile": values[0].strip()} if values[0].strip() else {}
