"""A cohort in a DataLad dataset: only the requested subjects are fetched, and `datalad run` records the
command, its inputs and outputs. Real DataLad and Debian's git-annex; the dataset is made here (no network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from hpclab.cli import main
from hpclab.mri import cohort as mri_cohort
from hpclab.mri import find_subjects, process_cohort
from hpclab.mri.errors import MRIError

from support import mri_data


@pytest.fixture(scope="module", autouse=True)
def git_annex() -> None:
    """git-annex comes from Debian (make system-packages, .ci/run): its absence is a set-up error, not a skip."""
    assert shutil.which("git-annex"), "git-annex is not installed: run make system-packages"


GIT_ENV = {"GIT_AUTHOR_NAME": "HPCLab test", "GIT_AUTHOR_EMAIL": "test@hpclab.invalid",
           "GIT_COMMITTER_NAME": "HPCLab test", "GIT_COMMITTER_EMAIL": "test@hpclab.invalid"}
DATALAD = str(Path(sys.executable).with_name("datalad"))


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A BIDS-style dataset of three subjects (sub-0k/anat/sub-0k_T1w.nii.gz: the 3 mm template, each scaled
    differently), and a fresh clone of it."""
    base = tmp_path_factory.mktemp("datalad")
    origin = base / "origin"
    _run([DATALAD, "create", str(origin)], base)
    small = mri_data.downsample(mri_data.template_t1(), 3)
    for k in (1, 2, 3):
        (origin / f"sub-0{k}" / "anat").mkdir(parents=True)
        nib.save(nib.Nifti1Image(small.get_fdata() * (0.9 + 0.1 * k), small.affine),
                 origin / f"sub-0{k}" / "anat" / f"sub-0{k}_T1w.nii.gz")
    _run([DATALAD, "save", "-m", "three subjects"], origin)
    _run([DATALAD, "clone", str(origin), str(base / "clone")], base)
    return base / "clone"


def _present(clone: Path) -> set[str]:
    """The subjects' input files whose content is in the clone (results are annexed too: left out)."""
    out = _run(["git", "annex", "find", "--in", "here", "--include", "sub-*_T1w.nii.gz"], clone).stdout
    return {line.strip().split("/")[0] for line in out.splitlines() if line.startswith("sub-")}


def _never_fetched(clone: Path, subject: str) -> None:
    """Nothing of ``subject`` is here: git-annex knows no copy of it in the clone, and its objects are absent."""
    files = sorted(p for p in (clone / subject).rglob("*") if p.is_symlink() or p.is_file())
    assert files, f"{subject} has no files in {clone}"
    assert _run(["git", "annex", "find", "--in", "here", subject], clone).stdout.strip() == ""
    objects = {p.name for p in (clone / ".git" / "annex" / "objects").rglob("*") if p.is_file()}
    for path in files:
        key = _run(["git", "annex", "lookupkey", str(path.relative_to(clone))], clone).stdout.strip()
        assert key and key not in objects, f"{path} was fetched: {key} is in .git/annex/objects"
        assert not path.exists(), f"{path} resolves to content"  # an annex link to content that is not here


def test_subjects_are_found_before_their_content_is_fetched(clone):
    assert _present(clone) == set()
    assert [s.id for s in find_subjects(clone)] == ["sub-01", "sub-02", "sub-03"]
    with pytest.raises(MRIError, match="no subject sub-09 in the cohort; it has sub-01, sub-02, sub-03"):
        process_cohort(clone, clone.parent / "never", subjects=["sub-09"], progress=False)
    assert _present(clone) == set()


def test_datalad_run_fetches_only_the_requested_subjects_and_records_provenance(clone):
    command = "hpclab mri cohort . results --subjects sub-01,sub-03 --no-views --no-progress"
    _run([DATALAD, "run", "-m", "cohort of two", "--input", "sub-01", "--input", "sub-03", "--output", "results",
          command], clone)

    assert _present(clone) == {"sub-01", "sub-03"}
    _never_fetched(clone, "sub-02")
    table = pd.read_csv(clone / "results" / "cohort_summary.csv")
    assert table["subject"].tolist() == ["sub-01", "sub-03"] and set(table["status"]) == {"ok"}
    assert table["t1"].str.endswith("anat/sub-01_T1w.nii.gz").iloc[0]  # the BIDS T1, not a conversion

    message = _run(["git", "log", "-1", "--format=%B"], clone).stdout
    assert message.startswith("[DATALAD RUNCMD] cohort of two")
    record = json.loads(message.split("=== Do not change lines below ===")[1].split("^^^ Do not change lines above ^^^")[0])
    assert record["cmd"] == command and record["exit"] == 0 and record["outputs"] == ["results"]
    assert record["inputs"] == ["sub-01", "sub-03"]  # what `datalad rerun` fetches again; not sub-02
    committed = _run(["git", "show", "--name-only", "--format=", "HEAD"], clone).stdout.split()
    assert "results/cohort_summary.csv" in committed
    assert any(p.startswith("results/sub-01/process/") for p in committed)


def test_slurm_cohort_submits_and_fetches_only_the_requested_subjects(clone, tmp_path, monkeypatch, capsys):
    """`--slurm --subjects`: only those subjects get array tasks and only they are fetched first (sbatch faked)."""
    fresh = tmp_path / "clone"
    _run([DATALAD, "clone", str(clone.parent / "origin"), str(fresh)], tmp_path)
    scripts: list[str] = []

    def fake_submit(script: Path, dependency: str | None = None) -> str:
        scripts.append(Path(script).read_text())
        return str(100 + len(scripts))

    monkeypatch.setattr(mri_cohort, "submit", fake_submit)
    out = tmp_path / "out"
    assert main(["mri", "cohort", str(fresh), str(out), "--slurm", "--subjects", "sub-03"]) == 0
    assert "submitted array job 101 (1 subjects) and summary job 102" in capsys.readouterr().out
    assert (out / "cohort_subjects.txt").read_text() == "sub-03\n"
    assert "#SBATCH --array=0-0" in scripts[0]
    assert _present(fresh) == {"sub-03"}
    for subject in ("sub-01", "sub-02"):
        _never_fetched(fresh, subject)

    assert main(["mri", "cohort", str(fresh), str(tmp_path / "none"), "--slurm", "--subjects", "sub-09"]) == 1
    assert "no subject sub-09 in the cohort" in capsys.readouterr().err
    assert len(scripts) == 2 and not (tmp_path / "none").exists()
