"""Which kernels a server offers: its profile's curated kernels, and the user's own (issue 30, item 6).

A profile's ``kernels`` limit what the server lists (``KernelSpecManager.allowed_kernelspecs``); a kernel the user
installed for themselves (``python -m ipykernel install --user``, from their own venv or conda environment) lies in
their own Jupyter data folder (``~/.local/share/jupyter/kernels``) and is offered beside the profile's, on every
profile and backend: a researcher's own environment is theirs to use wherever they work. Kernels installed for the
whole machine and not named by the profile stay hidden.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool


def own_kernel_dirs(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Kernel name (lower case, as Jupyter names them) -> resource folder, for every kernel.json under ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        return {}
    return {path.name.lower(): str(path) for path in sorted(root.iterdir()) if (path / "kernel.json").is_file()}


class ProfileKernelSpecManager(KernelSpecManager):
    """The profile's kernels (``allowed_kernelspecs``) and, unless ``own_kernels`` is off, the user's own."""

    own_kernels = Bool(True, config=True, help="Offer the kernels in the user's own Jupyter data folder too.")

    def find_kernel_specs(self) -> dict[str, str]:
        found = super().find_kernel_specs()
        if self.allowed_kernelspecs and self.own_kernels:  # no list: every kernel is offered already
            for name, folder in own_kernel_dirs(Path(jupyter_data_dir(), "kernels")).items():
                found.setdefault(name, folder)
        return found
