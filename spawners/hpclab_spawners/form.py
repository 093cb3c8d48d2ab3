"""Render the spawn form from the profiles a user may use, and read the choice back."""

from __future__ import annotations

from functools import lru_cache

import jinja2

from .config.model import Profile
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


def render_profile_form(profiles: list[Profile], selected: str | None = None, notes: dict[str, str] | None = None) -> str:
    """HTML for JupyterHub's spawn page: one radio choice per allowed profile, the default pre-selected.

    ``notes`` maps a slug to a live line shown under it (e.g. free GPUs in its SLURM partition).
    """
    notes = notes or {}
    if selected is None:
        selected = next((p.slug for p in profiles if p.default), profiles[0].slug if profiles else None)
    rows = [
        {
            "slug": p.slug,
            "display_name": p.display_name,
            "description": p.description,
            "cpus": p.cpus,
            "memory": p.memory,
            "memory_text": _memory_text(p.memory) if p.memory else "",
            "gpus": p.gpus,
            "time_limit_text": format_duration(p.time_limit) if p.time_limit else "",
            "note": notes.get(p.slug, ""),
        }
        for p in profiles
    ]
    return _environment().get_template("profile_form.html").render(profiles=rows, selected=selected)


def profile_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
    """user_options from the posted form: just the chosen slug (validated later, for form and API alike)."""
    values = formdata.get("profile") or [""]
    return {"profile": values[0].strip()} if values[0].strip() else {}
