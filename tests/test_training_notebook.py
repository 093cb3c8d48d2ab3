"""notebooks/resnet-horovod.ipynb runs top to bottom in a kernel of the deep-learning venv (.venv-dl)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from dltools import DL_PYTHON, require_dl_venv

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "resnet-horovod.ipynb"


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


@pytest.fixture
def dl_kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec for .venv-dl's python in a temporary JUPYTER_PATH."""
    require_dl_venv()
    spec = tmp_path / "jupyter" / "kernels" / "hpclab-dl-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(DL_PYTHON), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "HPCLab deep learning (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "hpclab-dl-test"


@pytest.mark.timeout(900)
def test_notebook_trains_digits_on_two_processes_and_plots(dl_kernel, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell('OUT = "runs/ci"  # injected by the test, as papermill would'))
    workdir = tmp_path / "work"
    workdir.mkdir()
    NotebookClient(nb, kernel_name=dl_kernel, timeout=600, resources={"metadata": {"path": str(workdir)}}).execute()
    text = _text(nb)
    assert "backend horovod, 2 processes" in text
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
