"""The knowledge base: a hub page listing every example (``/hub/hpclab/examples``), filterable by technology,
scientific field, tool and kernel, each with an "Open" link that starts or reuses a server of a matching profile
through ``/hub/hpclab/open`` (site_pages.py).

Entries come from the notebooks of the examples folder (``examples.source``): their ``metadata.hpclab`` holds
title, summary, technologies, field, tools, profile, gpus and contact, and the kernel is their kernelspec's. The
YAML's ``knowledge_base.entries`` add to or replace those keys, and add git repositories: "Open" on one of those lands
on nbgitpuller's ``/git-pull`` in the server (site_pages.py), which clones or merges it into the user's home.
"Open" names the entry's profile where the user may use it, otherwise the first profile they may use that offers
the kernel and has the GPUs it needs; none: no link, and the page says why.
A user never gets a link to a profile their groups do not allow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlencode

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from hpclab_hub.config.kb_model import KnowledgeBaseEntry
from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.spawner.access import may_use, visible_profiles

FILTERS = ("technology", "field", "tool", "kernel")


@dataclass(frozen=True)
class Example:
    """One entry of the knowledge base."""

    path: str  # relative to the examples folder
    title: str
    summary: str = ""
    technologies: tuple[str, ...] = ()
    field: str = ""
    tools: tuple[str, ...] = ()
    kernel: str = ""
    profile: str = ""  # the profile it names ('' = any that matches)
    gpus: int = 0
    contact: str = ""
    git: str = ""  # a git repository pulled into the server ('' for a notebook of the examples folder)
    branch: str = ""
    open: str = ""  # with git: the file opened after the pull, inside the repository

    def values(self, facet: str) -> tuple[str, ...]:
        """The entry's values of one filter."""
        return {
            "technology": self.technologies,
            "field": (self.field,) if self.field else (),
            "tool": self.tools,
            "kernel": (self.kernel,) if self.kernel else (),
        }[facet]

    def matches(self, filters: dict[str, str], text: str = "") -> bool:
        """Whether every given filter is among its values (case-insensitive) and ``text`` is in its title or summary."""
        for facet, wanted in filters.items():
            if wanted and wanted.lower() not in (v.lower() for v in self.values(facet)):
                return False
        return not text or text.lower() in f"{self.title} {self.summary}".lower()


def _first_heading(cells: list) -> str:
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def read_notebook(folder: Path, path: str) -> Example | None:
    """The entry a notebook's own metadata describes (None if it cannot be read as a notebook)."""
    try:
        notebook = json.loads((folder / path).read_text())
    except (OSError, ValueError):
        return None
    meta = notebook.get("metadata", {})
    own = meta.get("hpclab", {}) if isinstance(meta.get("hpclab"), dict) else {}
    return Example(
        path=path,
        title=str(own.get("title") or _first_heading(notebook.get("cells", [])) or path),
        summary=str(own.get("summary", "")),
        technologies=tuple(map(str, own.get("technologies", ()))),
        field=str(own.get("field", "")),
        tools=tuple(map(str, own.get("tools", ()))),
        kernel=str(meta.get("kernelspec", {}).get("name", "")),
        profile=str(own.get("profile", "")),
        gpus=int(own.get("gpus", 0)),
        contact=str(own.get("contact", "")),
    )


def _with_entry(example: Example, entry: KnowledgeBaseEntry) -> Example:
    given = entry.model_dump(exclude_none=True, exclude={"path", "folder"})
    for key in ("technologies", "tools"):
        if key in given:
            given[key] = tuple(given[key])
    return replace(example, **given)


def catalogue(deployment: Deployment) -> list[Example]:
    """Every example: the notebooks of the examples folder with the YAML's entries over them, and the YAML's git
    repositories (their ``path`` is the folder they land in, ending in /); by title."""
    folder = deployment.examples.source_dir
    examples: dict[str, Example | None] = {}
    if deployment.examples.delivered:
        found = [p.relative_to(folder).as_posix() for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
        examples = {path: read_notebook(folder, path) for path in sorted(found)}
    for entry in deployment.knowledge_base.entries:
        if entry.git is not None:
            examples[entry.target + "/"] = _with_entry(Example(entry.target + "/", entry.target), entry)
        elif entry.path is not None and deployment.examples.delivered:
            examples[entry.path] = _with_entry(examples.get(entry.path) or Example(entry.path, entry.path), entry)
    return sorted((e for e in examples.values() if e is not None), key=lambda e: e.title.lower())


def profile_for(example: Example, deployment: Deployment, groups: frozenset[str]) -> tuple[Profile | None, str]:
    """The profile "Open" starts the example in for this user, or None and why."""
    named = deployment.profile(example.profile) if example.profile else None
    if named is not None and may_use(named, groups):
        return named, ""
    for profile in visible_profiles(deployment, groups):
        if (not example.kernel or not profile.kernels or example.kernel in profile.kernels) and profile.gpus >= example.gpus:
            return profile, ""
    needs = f"the {example.kernel} kernel" if example.kernel else "it"
    if example.gpus:
        needs += f" and {example.gpus} GPU{'s' if example.gpus > 1 else ''}"
    return None, f"No profile you may use offers {needs}; ask your site's administrators."


class KnowledgeBaseHandler(BaseHandler):
    """GET /hub/hpclab/examples?technology=&field=&tool=&kernel=&q=: the examples, filtered, each with its Open link."""

    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        deployment = user.spawner.deployment
        if not deployment.knowledge_base.enabled:
            raise web.HTTPError(404, "The knowledge base is off on this hub (knowledge_base.enabled: false).")
        filters = {facet: self.get_argument(facet, "").strip() for facet in FILTERS}
        text = self.get_argument("q", "").strip()
        everything = catalogue(deployment)
        facets = {facet: sorted({v for e in everything for v in e.values(facet)}, key=str.lower) for facet in FILTERS}
        groups, folder = user.spawner.user_groups(), deployment.examples.folder
        rows = []
        for example in everything:
            if not example.matches(filters, text):
                continue
            profile, why = profile_for(example, deployment, groups)
            where = {"git": example.path.rstrip("/")} if example.git else {"path": f"{folder}/{example.path}"}
            link = f"{self.hub.base_url}hpclab/open?" + urlencode({"profile": profile.slug, **where}) if profile else ""
            rows.append({"example": example, "profile": profile.display_name if profile else "", "open": link, "why": why})
        html = await self.render_template(
            "knowledge.html", rows=rows, facets=facets, filters=filters, text=text, total=len(everything)
        )
        self.finish(html)
