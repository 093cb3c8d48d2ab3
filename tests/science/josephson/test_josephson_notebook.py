"""The φ0 Josephson notebook runs top to bottom in its curated `josephson` kernel, as users run it."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from support.notebooktools import add_kernel_check, assert_ran_in_curated_kernel, curated_kernels  # noqa: F401 (fixture)
from support.paths import REPO_ROOT


NOTEBOOK = REPO_ROOT / "notebooks" / "josephson-sweep.ipynb"


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_is_committed_without_outputs_and_has_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "N = " in tagged[0].source


@pytest.mark.timeout(120)
def test_notebook_executes_with_injected_parameters(curated_kernels, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("N = 8  # injected by the test, as papermill would"))
    add_kernel_check(nb)
    (client := NotebookClient(nb, timeout=60, resources={"metadata": {"path": str(tmp_path)}})).execute()
    assert_ran_in_curated_kernel(client, nb, "josephson")
    text = _text(nb)
    assert "G =  15.0: m_z(t_end) = +" in text and "reversed: False" in text
    assert "G =  22.0: m_z(t_end) = -" in text and "reversed: True" in text
    assert "64 points (G 8 x alpha 8)" in text
    assert "identical: True" in text and "same verdicts: True" in text
    assert "USE_SLURM is False" in text
    assert "round trip identical: True" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 3  # m_z(t), the map, the map pair
