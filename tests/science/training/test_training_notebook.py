"""notebooks/resnet-horovod.ipynb runs top to bottom in its curated `dl` kernel (the deep-learning venv, .venv-dl)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from support.dltools import require_dl_venv
from support.notebooktools import add_kernel_check, assert_ran_in_curated_kernel, curated_kernels  # noqa: F401 (fixture)
from support.paths import REPO_ROOT


NOTEBOOK = REPO_ROOT / "notebooks" / "resnet-horovod.ipynb"


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.data.get("text/plain", ""))
            elif out.output_type == "error":
                parts.append("\n".join(out.traceback))
    return "\n".join(parts)


def test_notebook_is_committed_without_outputs_and_has_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "NPROC = 2" in tagged[0].source and "USE_SLURM = False" in tagged[0].source


def test_first_cell_says_which_profiles_offer_the_dl_kernel():
    first = nbformat.read(NOTEBOOK, as_version=4).cells[0]
    assert first.cell_type == "markdown"
    assert "needs the `dl` kernel" in first.source and "on the GPU profile and on *CPU (large)*" in first.source
    assert "picked from the hub's form" in first.source and "without one they train on the CPU" in first.source


@pytest.mark.timeout(900)
def test_notebook_trains_digits_on_two_processes_and_plots(curated_kernels, tmp_path):
    require_dl_venv()  # the shipped YAML's dl runtime is <repo>/.venv-dl
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell('OUT = "runs/ci"  # injected by the test, as papermill would'))
    add_kernel_check(nb)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (client := NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(workdir)}})).execute()
    python = assert_ran_in_curated_kernel(client, nb, "dl")
    assert Path(python).parent == NOTEBOOK.parents[1] / ".venv-dl" / "bin", python  # the dl runtime in deploy/hub.yaml
    text = _text(nb)
    assert "backend horovod, 2 processes" in text
    assert "device: CPU (no GPU in this session)" in text or "device: GPU (" in text
    assert "horovodrun -np 2 -H localhost:2 --gloo" in text
    acc = float(re.search(r"validation accuracy: ([0-9.]+)", text).group(1))
    assert acc >= 0.90, text[-3000:]
    assert "ranks identical: True" in text
    assert re.search(r"checkpoint accuracy on 359 validation digits: ([0-9.]+)", text).group(1) == f"{acc:.3f}"
    assert "epoch,global_step,lr,train_loss" in text
    assert "ImageFolder" in text and "200 train / 200 val images" in text
    assert "#SBATCH --nodes=4" in text and "srun --kill-on-bad-exit=1" in text
    assert "USE_SLURM is False" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 1  # loss and accuracy curves
    assert (workdir / "runs" / "ci" / "checkpoint.pt").exists()
