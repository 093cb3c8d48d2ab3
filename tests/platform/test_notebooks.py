"""Every example notebook runs in CI, is committed without outputs, takes parameters, and is in the index.

Executing a notebook is each notebook's own test's job (tests/science/*/test_*notebook*.py, nbclient with
small parameters injected after the `parameters` cell, as papermill does); this file only makes
sure no notebook is left out, so "every notebook runs in CI" cannot quietly stop being true.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from support.paths import REPO_ROOT

REPO = REPO_ROOT
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
KERNELS = {p.name for p in (REPO / "hub/hpclab_hub/kernels/templates").iterdir() if (p / "kernel.json").is_file()}


def _committed_notebooks() -> list[Path]:
    """Every notebook git tracks or would track (untracked but not ignored), anywhere in the repository."""
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.ipynb"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return sorted({REPO / name for name in proc.stdout.split("\0") if name and (REPO / name).exists()})


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_there_are_example_notebooks():
    assert len(NOTEBOOKS) >= 3
    assert set(NOTEBOOKS) <= set(_committed_notebooks())


@pytest.mark.parametrize("path", _committed_notebooks(), ids=lambda p: str(p.relative_to(REPO)))
def test_committed_notebook_has_no_outputs_or_execution_counts(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; strip them with "
                       f"`jupyter nbconvert --clear-output --inplace {path.relative_to(REPO)}`")
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: saved widget state (an output) in the metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell(path):
    tagged = [c for c in _cells(path) if c["cell_type"] == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} code cells tagged `parameters`; CI injects small values after exactly one"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_executed_by_a_test(path):
    runners = []
    for test in sorted((REPO / "tests").rglob("test_*notebook*.py")):
        if test.name == Path(__file__).name:
            continue
        text = test.read_text(encoding="utf-8")
        if path.name in text and re.search(r"NotebookClient\(.*\)\.execute\(|papermill\.execute_notebook\(|run_notebook\(", text, re.S):
            runners.append(test.name)
    assert runners, f"no tests/**/test_*notebook*.py executes {path.name}: add one (nbclient, small parameters)"


def test_index_lists_every_notebook_with_its_kernel_and_run_time():
    index = (REPO / "notebooks" / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| \[`?([\w.-]+\.ipynb)`?\]\([^)]*\) \|.*$", index, re.M)}
    assert set(rows) == {p.name for p in NOTEBOOKS}, "notebooks/README.md's table must list exactly the notebooks"
    for name, row in rows.items():
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"`(\w+)`", cells[2]) and cells[2].strip("`") in KERNELS, f"{name}: kernel column {cells[2]!r}"
        assert re.search(r"\d+ s|\d+ min", cells[3]), f"{name}: run time column {cells[3]!r}"
        assert _kernelspec(REPO / "notebooks" / name).get("name") == cells[2].strip("`"), f"{name}: metadata names another kernel"


def _kernelspec(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["metadata"].get("kernelspec", {})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_metadata_names_its_curated_kernel(path):
    """JupyterLab opens the notebook in the kernel its metadata names: one of kernels/, with that kernel's label."""
    spec = _kernelspec(path)
    assert spec.get("name") in KERNELS, f"{path.name}: metadata.kernelspec {spec} is not a curated kernel ({sorted(KERNELS)})"
    shipped = json.loads((REPO / "hub/hpclab_hub/kernels/templates" / spec["name"] / "kernel.json").read_text(encoding="utf-8"))
    assert (spec["display_name"], spec["language"]) == (shipped["display_name"], shipped["language"])


CLUSTER_CALL = re.compile(r"(?<![\w.])(?:slurm_cluster|SLURMCluster|HpclabSLURMCluster)\(")


def _python_examples() -> list[tuple[str, str]]:
    """(where, code): every notebook's code cells and the ```python blocks of its markdown cells and of docs/*.md."""
    fenced = re.compile(r"```python\n(.*?)```", re.S)
    found = []
    for path in NOTEBOOKS:
        for i, cell in enumerate(_cells(path)):
            text = "".join(cell["source"])
            blocks = [text] if cell["cell_type"] == "code" else fenced.findall(text)
            found += [(f"{path.name} cell {i}", block) for block in blocks]
    for doc in sorted((REPO / "docs").glob("*.md")):
        found += [(doc.name, block) for block in fenced.findall(doc.read_text(encoding="utf-8"))]
    return found


def test_every_example_that_starts_a_slurm_cluster_ends_its_jobs():
    """A copied example must not leave worker jobs queued or running: a cluster is opened in `with`, or closed."""
    examples = _python_examples()
    assert any(CLUSTER_CALL.search(code) for _, code in examples)  # the examples this test reads are still there
    unclosed = []
    for where, code in examples:
        for line in code.splitlines():
            if not CLUSTER_CALL.search(line) or re.match(r"\s*(with |def |from |import )", line):
                continue
            name = re.match(r"\s*(\w+)\s*=", line)
            if not (name and f"{name.group(1)}.close()" in code):
                unclosed.append(f"{where}: {line.strip()}")
    assert not unclosed, "clusters neither opened in `with` nor closed (their jobs outlive the example):\n" + "\n".join(unclosed)
