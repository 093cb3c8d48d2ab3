"""Run the example notebooks as a user would: in the curated kernel each names in its metadata, not in python3.

The kernelspecs are installed the way an admin does (`hpclab-hub kernels install --prefix` from the
shipped deploy/hub.yaml) into a temporary prefix that JUPYTER_PATH points at; nbclient then picks the
kernel from the notebook's ``metadata.kernelspec.name`` through jupyter_client's KernelSpecManager,
and the kernel starts through ``hpclab-kernel NAME`` as in JupyterLab.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from support.paths import REPO_ROOT

REPO = REPO_ROOT
HUB_CLI = Path(sys.executable).parent / "hpclab-hub"
SHIPPED_YAML = REPO / "deploy" / "hub.yaml"
CURATED = ("josephson", "mri", "dl")

#: Appended to a notebook before it runs: which kernel ran it (set by hpclab-kernel) and on which Python.
KERNEL_CHECK = 'import os, sys\nprint(f"ran in kernel {os.environ.get(\'HPCLAB_KERNEL\')!r} on {sys.executable}")'

_installed: Path | None = None  # JUPYTER_PATH entry with the kernelspecs, installed once a session


def install_kernelspecs(prefix: Path) -> Path:
    """``hpclab-hub kernels install --prefix PREFIX`` from the shipped YAML; the JUPYTER_PATH entry to use."""
    proc = subprocess.run([str(HUB_CLI), "kernels", "install", "--config", str(SHIPPED_YAML), "--prefix", str(prefix)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, f"hpclab-hub kernels install failed:\n{proc.stdout}\n{proc.stderr}"
    for name in CURATED:
        assert f"installed {name} -> {prefix}/share/jupyter/kernels/{name}" in proc.stdout, proc.stdout
    return prefix / "share" / "jupyter"


@pytest.fixture
def curated_kernels(tmp_path_factory, monkeypatch) -> Path:
    """JUPYTER_PATH set to the installed kernelspecs, which then win over any other spec of the same name."""
    global _installed
    if _installed is None:
        _installed = install_kernelspecs(tmp_path_factory.mktemp("kernelspecs"))
    monkeypatch.setenv("JUPYTER_PATH", str(_installed))
    found = KernelSpecManager().find_kernel_specs()
    for name in CURATED:
        assert found.get(name) == str(_installed / "kernels" / name), found
    return _installed


def add_kernel_check(nb: nbformat.NotebookNode) -> None:
    """Append the cell that reports the kernel the notebook ran in."""
    nb.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))


def assert_ran_in_curated_kernel(client: NotebookClient, nb: nbformat.NotebookNode, name: str) -> str:
    """The notebook declared ``name``, nbclient took it from the metadata, and the check cell says it ran there."""
    assert nb.metadata.kernelspec.name == name
    assert client.kernel_name == name  # no override: nbclient read metadata.kernelspec.name
    last = nb.cells[-1]
    assert last.source == KERNEL_CHECK, "add_kernel_check(nb) before executing"
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    assert f"ran in kernel {name!r} on " in text, text
    return text.split(" on ", 1)[1].strip()  # the kernel's sys.executable


def run_notebook(path: Path, kernel: str, workdir: Path, parameters: str, timeout: int = 300) -> list:
    """Execute ``path`` in its curated ``kernel`` from ``workdir``, with ``parameters`` (source) appended to its
    ``parameters`` cell the way papermill injects them; return every code cell's outputs, in order."""
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\n" + parameters + "\n"
    add_kernel_check(nb)
    (client := NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(workdir)}})).execute()
    assert_ran_in_curated_kernel(client, nb, kernel)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
