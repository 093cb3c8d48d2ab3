"""``hpclab mri convert|process|stats|cohort`` from the installed command line (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpclab.mri import read_metadata, read_segstats

from support import mri_data


def hpclab(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("hpclab")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "hpclab"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    small = mri_data.downsample(mri_data.template_t1(), 3)
    mri_data.write_series(np.asarray(small.dataobj), small.affine, root / "dicom", description="T1w_MPRAGE")
    return root / "dicom"


def test_convert_process_stats_chain(dicom_dir, tmp_path):
    conv = hpclab("mri", "convert", dicom_dir, tmp_path / "nifti", "--deidentify", "--subject", "sub-07")
    assert conv.returncode == 0, conv.stderr
    nifti = tmp_path / "nifti" / "1_T1w_MPRAGE.nii.gz"
    assert str(nifti) in conv.stdout and "66 x 78 x 63" in conv.stdout
    assert read_metadata(tmp_path / "nifti" / "1_T1w_MPRAGE.txt")["subject_id"] == "sub-07"

    proc = hpclab("mri", "process", nifti, tmp_path / "proc")
    assert proc.returncode == 0, proc.stderr
    for name in ("brainmask.nii.gz", "tissue.nii.gz", "n4.nii.gz", "segstats.txt", "ortho.png", "montage.png"):
        assert (tmp_path / "proc" / f"1_T1w_MPRAGE_{name}").exists(), name
    assert "Gray-Matter:" in proc.stdout

    again = hpclab("mri", "process", nifti, tmp_path / "proc")
    assert again.returncode == 1 and "already holds" in again.stderr and "Traceback" not in again.stderr

    out = tmp_path / "tissue.stats"
    stats = hpclab("mri", "stats", tmp_path / "proc" / "1_T1w_MPRAGE_tissue.nii.gz",
                   tmp_path / "proc" / "1_T1w_MPRAGE_n4.nii.gz", "--lut", "tissue", "--out", out)
    assert stats.returncode == 0, stats.stderr
    ours = read_segstats(out)
    theirs = read_segstats(tmp_path / "proc" / "1_T1w_MPRAGE_segstats.txt")
    assert ours["NVoxels"].tolist() == theirs["NVoxels"].tolist()
    assert ours["StructName"].tolist() == ["CSF", "Gray-Matter", "White-Matter"]
    printed = hpclab("mri", "stats", tmp_path / "proc" / "1_T1w_MPRAGE_tissue.nii.gz",
                     tmp_path / "proc" / "1_T1w_MPRAGE_n4.nii.gz")
    assert "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName normMean" in printed.stdout
    assert "Seg0002" in printed.stdout


def test_errors_are_one_line_and_name_the_input(tmp_path):
    (tmp_path / "empty").mkdir()
    res = hpclab("mri", "convert", tmp_path / "empty", tmp_path / "out")
    assert res.returncode == 1
    expected = f"hpclab mri convert: error: no DICOM files in {tmp_path / 'empty'} (the folder is empty)"
    assert res.stderr.strip() == expected
    res = hpclab("mri", "stats", tmp_path / "none.nii.gz", tmp_path / "none2.nii.gz")
    assert res.returncode == 1 and f"labels file {tmp_path / 'none.nii.gz'} does not exist" in res.stderr


def test_session_command_still_works():
    res = hpclab("session", "--json")
    assert res.returncode == 0 and '"cores"' in res.stdout  # adding ``mri`` left ``session`` alone
