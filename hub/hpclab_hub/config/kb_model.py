"""The deploy YAML's ``knowledge_base`` section: the examples page's entries beyond (or over) the notebooks' own metadata."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictStr, field_validator

from hpclab_hub.config.fields import NonNegativeInt, Slug, Strict


class KnowledgeBaseEntry(Strict):
    """One example on the knowledge base page; keys left out come from the notebook's own metadata (metadata.hpclab)."""

    path: StrictStr = Field(description="The notebook, relative to the examples folder (e.g. resnet-horovod.ipynb).")
    title: StrictStr | None = Field(None, description="Title on the page; default the notebook's.")
    summary: StrictStr | None = Field(None, description="One or two sentences on what it shows.")
    technologies: list[StrictStr] | None = Field(None, description="ML or computing technologies, e.g. [PyTorch, Horovod].")
    field: StrictStr | None = Field(None, description="Scientific field, e.g. Neuroimaging.")
    tools: list[StrictStr] | None = Field(None, description="Tools and libraries it uses, e.g. [dask, DataLad].")
    kernel: StrictStr | None = Field(None, description="The kernel it runs in; default the notebook's kernelspec.")
    profile: Slug | None = Field(
        None,
        description='The profile "Open" starts it in, where the user may use it; otherwise the first profile they may '
        "use that offers its kernel (and its GPUs).",
    )
    gpus: NonNegativeInt | None = Field(None, description="GPUs it needs: only profiles with at least as many match.")
    contact: StrictStr | None = Field(None, description="Who to ask about it: a name and an address.")

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        if not value.endswith(".ipynb") or value.startswith("/") or ".." in value.split("/") or "\\" in value:
            raise ValueError(f"{value!r}: must be a notebook inside the examples folder, e.g. resnet-horovod.ipynb")
        return value


class KnowledgeBaseSettings(Strict):
    """The hub's page of runnable examples (/hub/hpclab/examples), filterable, each opened in a matching profile."""

    enabled: bool = Field(True, description="Show the page (and its link in the hub's menu) when examples are delivered.")
    entries: list[KnowledgeBaseEntry] = Field(
        default_factory=list,
        description="Entries for notebooks of the examples folder: they add to, or replace keys of, the notebooks' metadata.",
    )


def knowledge_base_issues(deployment: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path, message) for entries whose notebook is not in the examples folder (``hpclab-hub check``)."""
    if not deployment.examples.delivered:
        return []
    folder = deployment.examples.source_dir
    return [
        (("knowledge_base", "entries", i, "path"), f"no such notebook in the examples folder {folder}: {entry.path}")
        for i, entry in enumerate(deployment.knowledge_base.entries)
        if not (folder / entry.path).is_file()
    ]
