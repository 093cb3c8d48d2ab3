"""notebooks/mri-datalad.ipynb runs end to end (nbclient, in its curated `mri` kernel): a dataset made,
cloned, two of its subjects fetched and processed under `datalad run`, the provenance shown."""

from __future__ import annotations

import pytest

from support.notebooktools import curated_kernels, run_notebook  # noqa: F401 (fixture)
from support.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "mri-datalad.ipynb"


def test_notebook_fetches_only_the_picked_subjects_and_shows_the_record(curated_kernels, tmp_path, monkeypatch):
    for key, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@x"), ("GIT_COMMITTER_NAME", "t"),
                       ("GIT_COMMITTER_EMAIL", "t@x")):
        monkeypatch.setenv(key, value)
    outputs = run_notebook(NOTEBOOK, "mri", tmp_path, f"workdir = {str(tmp_path / 'demo')!r}\nn_subjects = 3\ndownsample = 3")
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")  # one print may come in several chunks
    assert "content here:    []" in text
    assert "content here now: ['sub-01', 'sub-03']" in text  # sub-02 never fetched
    assert "[DATALAD RUNCMD] MRI cohort" in text and '"cmd": "hpclab mri cohort . results --subjects sub-01,sub-03' in text
    assert '"inputs": [\n    "sub-01",\n    "sub-03"\n  ]' in text  # the record names what the run read
    html = "\n".join(o.data.get("text/html", "") for o in outputs if o.output_type == "execute_result")
    assert "sub-03" in html and "ok" in html
