"""The deploy YAML's `modules` section: Lmod for servers whose profile has the `modules` lab feature (jupyterlmod)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from hpclab_hub.config.fields import Strict, _resolve


class ModulesSettings(Strict):
    """Environment modules (Lmod) on servers whose profile lists `modules` in `lab_features`: jupyterlmod's panel,
    `module load` in a notebook, a terminal and a kernel's `modules` lines. Lmod must be installed where servers run
    (Debian's `lmod`; `make system-packages`), and these folders must be readable there (on a cluster: a shared file
    system)."""

    lmod: Path = Field(
        Path("/usr/share/lmod/lmod"),
        description="Lmod's folder (Debian's lmod package puts it at /usr/share/lmod/lmod); servers run its libexec/lmod.",
    )
    curated: Path | None = Field(
        None,
        description="Folder where `hpclab-hub kernels install` writes one modulefile per curated kernel with a venv or "
        "conda runtime (`module load mri` puts that kernel's Python first on PATH); first on MODULEPATH. Relative to "
        "the YAML file; none = no modulefiles of HPCLab's.",
    )
    modulepath: list[Path] = Field(
        default_factory=list,
        description="The site's own modulefile folders, searched after `curated` (e.g. /etc/lmod/modules, /opt/modulefiles).",
    )

    @field_validator("lmod", "curated")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @field_validator("modulepath")
    @classmethod
    def _absolutes(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        return [_resolve(path, info) for path in value]

    def server_env(self) -> dict[str, str]:
        """What a server with the `modules` feature gets: Lmod's command (jupyterlmod reads LMOD_CMD), the folders to
        search, and Lmod's bash set-up for non-interactive bash (a kernel's `modules` lines, `bash -c`)."""
        folders = ([self.curated] if self.curated else []) + self.modulepath
        return {
            "LMOD_CMD": str(self.lmod / "libexec" / "lmod"),
            "LMOD_DIR": str(self.lmod / "libexec"),
            "MODULEPATH": ":".join(str(folder) for folder in folders),
            "MODULEPATH_ROOT": str(self.lmod / "modulefiles"),
            "BASH_ENV": str(self.lmod / "init" / "bash"),
        }
