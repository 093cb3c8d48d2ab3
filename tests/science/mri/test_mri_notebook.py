"""notebooks/mri-pipeline.ipynb runs end to end (nbclient, in its curated `mri` kernel) and shows its results."""

from __future__ import annotations

import json


from support.notebooktools import curated_kernels, run_notebook  # noqa: F401 (fixture)
from support.paths import REPO_ROOT


NOTEBOOK = REPO_ROOT / "notebooks" / "mri-pipeline.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1


def test_notebook_runs_the_five_steps(curated_kernels, tmp_path):
    outputs = run_notebook(NOTEBOOK, "mri", tmp_path, f"workdir = {str(tmp_path)!r}\ndownsample = 3", timeout=120)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")  # one print may come in several chunks
    assert "subject_id" in text and "sub-demo" in text and "DEMO-001" not in text
    shown = [o for o in outputs if o.output_type in ("execute_result", "display_data")]
    html = "\n".join(o.data.get("text/html", "") for o in shown)
    assert "Gray-Matter" in html and "normMean" in html  # the DataFrame
    pngs = [o for o in shown if "image/png" in o.data]
    assert len(pngs) >= 3  # ortho, montage, volumes shown inline
    assert (tmp_path / "processed" / "1_T1w_MPRAGE_tissue.nii.gz").exists()
