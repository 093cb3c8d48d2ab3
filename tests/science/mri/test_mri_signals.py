"""`hpclab mri` under a real SIGTERM, and errors with and without --debug (installed command, subprocesses).

The signal goes to the real process at the moment that matters: while dcm2niix converts, while loky
workers process a cohort. Afterwards: earlier results as they were, no hidden staging folder or
temporary file, no process of the run left (found by a marker in their environment), one line on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from hpclab.safe_output import TEMP_PREFIX

from support import mri_data
from support.proctools import cmdline, descendants, left_behind, sigterm_when

HPCLAB = str(Path(sys.executable).with_name("hpclab"))
STOPPED = "hpclab mri: stopped by SIGTERM"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[Path]:
    """Hidden staging folders and temporary files anywhere under ``folder``."""
    return sorted([*folder.rglob(".hpclab-convert-*"), *folder.rglob(f"{TEMP_PREFIX}*")])


@pytest.fixture(scope="module")
def big_dicom(tmp_path_factory) -> Path:
    """The 1 mm template (197 x 233 x 189) as three DICOM series, axial, coronal and sagittal: ~1 s of dcm2niix."""
    root = tmp_path_factory.mktemp("big") / "dicom"
    t1 = mri_data.template_t1()
    data = np.asarray(t1.dataobj)
    for number, axis in ((1, 2), (2, 1), (3, 0)):
        mri_data.write_series(data, t1.affine, root / f"series{number}", slice_axis=axis, series_number=number)
    return root


@pytest.fixture(scope="module")
def small_dicom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "dicom"
    small = mri_data.downsample(mri_data.template_t1(), 3)
    mri_data.write_series(np.asarray(small.dataobj), small.affine, root)
    return root


def test_sigterm_mid_conversion_kills_dcm2niix_and_keeps_earlier_files(big_dicom, small_dicom, tmp_path):
    out = tmp_path / "out"
    earlier = subprocess.run([HPCLAB, "mri", "convert", str(small_dicom), str(out)], capture_output=True, text=True,
                             timeout=120)
    assert earlier.returncode == 0, earlier.stderr
    (out / "notes.txt").write_text("an earlier result")
    before = _files(out)
    assert "1_T1w_MPRAGE.nii.gz" in before  # the conversion below would replace it (--overwrite)

    def converting(pid: int) -> list:  # dcm2niix at work, into the staging folder
        found = [p for p in descendants(pid) if "dcm2niix" in cmdline(p)]
        return found if found and list(out.glob(".hpclab-convert-*")) else []

    stop = sigterm_when([HPCLAB, "mri", "convert", str(big_dicom), str(out), "--overwrite"], converting,
                        "dcm2niix converting into the staging folder", timeout=60)
    err, mark, converter = stop.err, stop.mark, stop.seen
    assert err.strip() == STOPPED and "Traceback" not in err
    assert not converter[0].is_running() or converter[0].status() == "zombie"
    assert left_behind(mark) == [], "a process of the conversion still runs"
    assert _leftovers(out) == []
    assert _files(out) == before, "the earlier files were touched"


def _cohort(root: Path, n_nifti: int, n_dicom: int) -> None:
    """Small subjects (the template at 3 mm, ~0.5 s each): NIfTI files and DICOM folders (dcm2niix in the workers)."""
    small = mri_data.downsample(mri_data.template_t1(), 3)
    data = np.asarray(small.dataobj)
    for k in range(n_dicom):
        mri_data.write_series(data, small.affine, root / f"sub-d{k:02d}" / "scan", patient_id=f"P{k}")
    for k in range(n_nifti):
        nib.save(nib.Nifti1Image(data, small.affine), root / f"sub-n{k:02d}.nii.gz")


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    _cohort(root, n_nifti=10, n_dicom=2)
    return root


def test_sigterm_mid_cohort_stops_the_workers_and_keeps_finished_subjects(cohort_root, tmp_path):
    out = tmp_path / "out"
    cmd = [HPCLAB, "mri", "cohort", str(cohort_root), str(out), "--jobs", "2", "--no-progress", "--no-views"]
    stop = sigterm_when(cmd, lambda _: sorted(out.glob("*/subject_summary.json")), "finished subject")
    err, mark, finished, children = stop.err, stop.mark, stop.seen, stop.children
    assert err.strip() == STOPPED and "Traceback" not in err
    assert sum("LokyProcess" in c for c in children) == 2, f"the loky workers were not running: {children}"
    assert left_behind(mark) == [], "loky workers (or their children) still run"
    kept = sorted(out.glob("*/subject_summary.json"))
    assert set(finished) <= set(kept) and len(kept) < 12, "nothing was left to stop"
    for summary in kept:
        row = json.loads(summary.read_text())
        assert row["status"] == "ok", row
        assert Path(row["t1"]).exists() and list((summary.parent / "process").glob("*_tissue.nii.gz"))
    assert _leftovers(out) == []
    assert not (out / "cohort_summary.csv").exists()

    # the same command again: finished subjects are not redone, the others are
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    status = pd.read_csv(out / "cohort_summary.csv").set_index("subject")["status"].to_dict()
    assert len(status) == 12 and all(status[s.parent.name] == "done before" for s in kept), status
    assert sum(v == "ok" for v in status.values()) == 12 - len(kept), status


@pytest.mark.parametrize("args, message", [
    (["convert", "{tmp}/empty", "{tmp}/out"], "no DICOM files in {tmp}/empty"),
    (["stats", "{tmp}/none.nii.gz", "{tmp}/none2.nii.gz"], "labels file {tmp}/none.nii.gz does not exist"),
])
def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = ["mri", *(a.format(tmp=tmp_path) for a in args)]
    message = message.format(tmp=tmp_path)
    plain = subprocess.run([HPCLAB, *args], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert message in plain.stderr and "Traceback" not in plain.stderr
    for debug_args in (["--debug", *args], [*args, "--debug"]):  # a flag of `hpclab`, accepted anywhere
        debug = subprocess.run([HPCLAB, *debug_args], capture_output=True, text=True, timeout=60)
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr, debug.stderr
        assert message in debug.stderr.strip().splitlines()[-1]
