"""The deploy YAML's ``knowledge_base`` section: the examples page's entries beyond (or over) the notebooks' own metadata,
and git repositories that "Open" pulls into the user's server with nbgitpuller."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, StrictStr, field_validator, model_validator

from hpclab_hub.config.fields import NonNegativeInt, Slug, Strict

_FOLDER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _relative(value: str, what: str) -> str:
    if value.startswith("/") or ".." in value.split("/") or "\\" in value:
        raise ValueError(f"{value!r}: must be {what}")
    return value


class KnowledgeBaseEntry(Strict):
    """One example on the knowledge base page: a notebook of the examples folder (``path``; keys left out come from its
    own metadata, metadata.hpclab) or a git repository (``git``) pulled into the user's server by nbgitpuller."""

    path: StrictStr | None = Field(None, description="The notebook, relative to the examples folder (e.g. resnet-horovod.ipynb).")
    git: StrictStr | None = Field(
        None,
        description="Instead of path: a git repository (https://, ssh, file:// or a path the servers' hosts can read) that "
        '"Open" pulls into the user\'s home with nbgitpuller (cloned the first time, merged after; their edits are kept).',
    )
    branch: StrictStr | None = Field(None, description="With git: the branch to pull; default the repository's own.")
    folder: StrictStr | None = Field(
        None, description="With git: the folder in the user's home it lands in; default the repository's name."
    )
    open: StrictStr | None = Field(
        None, description="With git: the file opened after the pull, inside the repository (intro.ipynb); default: its folder."
    )
    title: StrictStr | None = Field(None, description="Title on the page; default the notebook's (required for git).")
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
    def _inside(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".ipynb"):
            raise ValueError(f"{value!r}: must be a notebook inside the examples folder, e.g. resnet-horovod.ipynb")
        return None if value is None else _relative(value, "a notebook inside the examples folder, e.g. resnet-horovod.ipynb")

    @field_validator("open")
    @classmethod
    def _in_repository(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value, "a file inside the repository, e.g. intro.ipynb")

    @field_validator("folder")
    @classmethod
    def _one_folder(cls, value: str | None) -> str | None:
        if value is not None and not _FOLDER.match(value):
            raise ValueError(f"{value!r}: must be one folder name (letters, digits, _ . -), e.g. ml-tutorial")
        return value

    @model_validator(mode="after")
    def _notebook_or_repository(self) -> KnowledgeBaseEntry:
        if (self.path is None) == (self.git is None):
            raise ValueError("give either path (a notebook of the examples folder) or git (a repository), not both or neither")
        if self.git is None and any(v is not None for v in (self.branch, self.folder, self.open)):
            raise ValueError("branch, folder and open go with git entries only")
        if self.git is not None and not self.title:
            raise ValueError("a git entry needs a title")
        if self.git is not None and self.folder is None and not _FOLDER.match(self.target):
            raise ValueError(f"{self.git!r}: name the folder it lands in (folder: ...)")
        return self

    @property
    def target(self) -> str:
        """A git entry's folder in the user's home: ``folder``, or the repository's name (nbgitpuller's default)."""
        if self.folder:
            return self.folder
        name = (self.git or "").rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        return name.removesuffix(".git")


class KnowledgeBaseSettings(Strict):
    """The hub's page of runnable examples (/hub/hpclab/examples), filterable, each opened in a matching profile."""

    enabled: bool = Field(True, description="Show the page (and its link in the hub's menu) when examples are delivered.")
    entries: list[KnowledgeBaseEntry] = Field(
        default_factory=list,
        description="Entries for notebooks of the examples folder (they add to, or replace keys of, the notebooks' "
        "metadata) and git repositories pulled into the user's server.",
    )

    @model_validator(mode="after")
    def _folders_unique(self) -> KnowledgeBaseSettings:
        folders = [e.target for e in self.entries if e.git]
        twice = sorted({f for f in folders if folders.count(f) > 1})
        if twice:
            raise ValueError(f"two git entries land in the same folder: {', '.join(twice)} (give each its own folder)")
        return self

    @property
    def pulls_git(self) -> bool:
        """Whether an entry is a git repository: servers then get nbgitpuller's server extension."""
        return self.enabled and any(e.git for e in self.entries)


def local_repository(url: str) -> str:
    """The folder of a git entry on this host's file system (a path or file:// URL), '' for a remote one."""
    path = url.removeprefix("file://") if url.startswith("file://") else url
    return path if path.startswith("/") else ""


def knowledge_base_issues(deployment: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path, message) for entries whose notebook is not in the examples folder, and git entries in a folder no
    server can see: /tmp, /var/tmp and /dev/shm are each server's own (``hpclab-hub check``)."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    folder = deployment.examples.source_dir
    for i, entry in enumerate(deployment.knowledge_base.entries):
        if entry.path is not None and deployment.examples.delivered and not (folder / entry.path).is_file():
            message = f"no such notebook in the examples folder {folder}: {entry.path}"
            issues.append((("knowledge_base", "entries", i, "path"), message))
        local = local_repository(entry.git or "")
        if any(local == top or local.startswith(top + "/") for top in ("/tmp", "/var/tmp", "/dev/shm")):
            issues.append(
                (
                    ("knowledge_base", "entries", i, "git"),
                    f"{local}: servers cannot see it (each has its own /tmp, /var/tmp, /dev/shm); keep it elsewhere, e.g. /srv",
                )
            )
    return issues
