"""`hpclab mri` never loses work and says what went wrong in one line: truncated DICOM files, unwritable
folders, SIGTERM mid-processing, interrupted conversions, dcm2niix's interpolated _Eq_ files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import hpclab.mri.conversion as conversion
import hpclab.mri.processing as processing
from hpclab.interrupts import Interrupted, signals_raise
from hpclab.mri import process, process_cohort
from hpclab.mri.processing import output_paths
from hpclab.safe_output import output_set

from support import mri_data
from support.proctools import wait_until

HPCLAB = str(Path(sys.executable).with_name("hpclab"))


def _mri(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([HPCLAB, "mri", *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


def _dti_pair(folder: Path, truncate_to: int) -> None:
    """nibabel's two real Siemens DTI mosaic files, the second cut to ``truncate_to`` bytes."""
    folder.mkdir(parents=True)
    (folder / "0.dcm").write_bytes(mri_data.SIEMENS_DTI[0].read_bytes())
    (folder / "1.dcm").write_bytes(mri_data.SIEMENS_DTI[1].read_bytes()[:truncate_to])


def test_a_truncated_file_that_stops_the_series_is_named(tmp_path):
    _dti_pair(tmp_path / "dicom", 120_000)
    proc = _mri("convert", tmp_path / "dicom", tmp_path / "out")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "1.dcm is truncated: 120000 bytes, 24682 of 131072 bytes of pixel data" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_a_truncated_file_dropped_from_a_series_is_named(tmp_path):
    _dti_pair(tmp_path / "dicom", 500)
    proc = _mri("convert", tmp_path / "dicom", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "dcm2niix used 1 of the 2 DICOM files" in proc.stderr and "1.dcm: no image: 500 bytes" in proc.stderr


def test_a_fifo_in_the_folder_does_not_hang_the_conversion(tmp_path):
    _dti_pair(tmp_path / "dicom", 10**9)
    os.mkfifo(tmp_path / "dicom" / "pipe.dcm")
    proc = _mri("convert", tmp_path / "dicom", tmp_path / "out")
    assert proc.returncode == 0 and "pipe.dcm" in proc.stderr and "not DICOM" in proc.stderr


def test_an_interrupted_conversion_leaves_no_hidden_folder_and_keeps_earlier_files(tmp_path, monkeypatch):
    _dti_pair(tmp_path / "dicom", 10**9)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.nii.gz").write_bytes(b"an earlier result")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGTERM becomes under `hpclab`: after dcm2niix wrote into staging

    monkeypatch.setattr(conversion, "_plan_series", interrupted)
    with pytest.raises(KeyboardInterrupt):
        conversion.convert(tmp_path / "dicom", out)
    assert [p.name for p in out.iterdir()] == ["earlier.nii.gz"]
    assert (out / "earlier.nii.gz").read_bytes() == b"an earlier result"


@pytest.fixture(scope="module")
def t1_file(tmp_path_factory) -> Path:
    """The 1 mm template T1 in a folder everyone may read (the unwritable-folder test runs as nobody)."""
    folder = tmp_path_factory.mktemp("t1")
    for parent in (folder, *folder.parents):
        if parent.stat().st_mode & 0o005 != 0o005:
            parent.chmod(parent.stat().st_mode | 0o005)
    path = folder / "t1.nii.gz"
    nib.save(mri_data.template_t1(), path)
    path.chmod(0o644)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the nobody account needs root")
def test_process_into_an_unwritable_folder_fails_before_computing(t1_file, tmp_path):
    for parent in (tmp_path, *tmp_path.parents):
        if parent.stat().st_mode & 0o005 != 0o005:
            parent.chmod(parent.stat().st_mode | 0o005)
    folder = tmp_path / "results"
    folder.mkdir(mode=0o755)
    start = time.monotonic()
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", HPCLAB, "mri",
                           "process", str(t1_file), str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"hpclab mri process: error: cannot write in {folder}: Permission denied"
    assert time.monotonic() - start < 8, "the volume was processed before the folder was checked"


def test_a_volume_too_large_for_the_memory_is_refused_before_reading_it(t1_file, tmp_path):
    proc = _mri("process", t1_file, tmp_path / "out", env={**os.environ, "MEM_LIMIT": str(200 * 2**20)})
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{t1_file} (197 x 233 x 189 voxels) needs about" in proc.stderr and "200.0 MiB is available" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_truncated_nifti_is_one_line_naming_the_file(t1_file, tmp_path):
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(t1_file.read_bytes()[:200_000])
    proc = _mri("process", cut, tmp_path / "out")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"cannot read the voxels of {cut}" in proc.stderr and "Traceback" not in proc.stderr


#: what `hpclab mri process t1.nii.gz OUT` writes: one set, replaced as a whole
PROCESS_SET = [f"t1_{role}" for role in ("brainmask.nii.gz", "n4.nii.gz", "tissue.nii.gz", "segstats.txt",
                                          "ortho.png", "montage.png")]


def _moment(moment: str, out: Path) -> Callable[[], bool]:
    """When to send SIGTERM: computing, at the first new entry in ``out`` (probe, staging), once an output is replaced."""
    start, before = time.monotonic(), {p.name for p in out.iterdir()}
    inodes = {out / name: (out / name).stat().st_ino for name in PROCESS_SET}
    if moment == "computing":  # deepbet, N4, k-means: about 4 s of the 5.5 s on the template
        return lambda: time.monotonic() - start > 1.0
    if moment == "writing":
        return lambda: any(p.name not in before for p in out.iterdir())
    return lambda: any(p.stat().st_ino != ino for p, ino in inodes.items())


@pytest.mark.parametrize("moment", ["computing", "writing", "replaced"])
def test_sigterm_mid_processing_keeps_the_previous_outputs(t1_file, tmp_path, moment):
    """SIGTERM at any moment leaves the whole previous set or the whole new one, the user's files, nothing hidden."""
    out = tmp_path / "out"
    out.mkdir()
    previous = {out / name: f"previous {name}".encode() for name in PROCESS_SET}
    for path, content in previous.items():
        path.write_bytes(content)
    (out / "notes.txt").write_text("mine")
    ready = _moment(moment, out)
    proc = subprocess.Popen([HPCLAB, "mri", "process", str(t1_file), str(out), "--overwrite"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(ready, 120, f"moment {moment!r}", every=0.002, alive=proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    old = sorted(p.name for p, content in previous.items() if p.read_bytes() == content)
    assert old in ([], sorted(PROCESS_SET)), f"a mix: {old} old, the others new"
    assert sorted(p.name for p in out.iterdir()) == sorted([*PROCESS_SET, "notes.txt"])  # no hidden leftover
    assert (out / "notes.txt").read_text() == "mine"
    if moment == "replaced":  # the commit is the last step: the signal may come after the command finished
        assert old == [] and proc.returncode in (0, 128 + signal.SIGTERM, -signal.SIGTERM), err
        nib.load(out / "t1_tissue.nii.gz").get_fdata()
    else:
        assert old == sorted(PROCESS_SET) and proc.returncode == 128 + signal.SIGTERM, err
        assert err.strip().splitlines()[-1] == "hpclab mri: stopped by SIGTERM"


def test_process_replaces_its_outputs_as_one_set(tmp_path, monkeypatch):
    """An exception half-way through the writing changes nothing; a run without views removes the earlier views."""
    t1 = tmp_path / "t1.nii.gz"
    nib.save(mri_data.downsample(mri_data.template_t1(), 3), t1)
    out = tmp_path / "out"
    first = process(t1, out, views=True)
    assert first.outputs == output_paths(t1, out, views=True) and all(p.exists() for p in first.outputs.values())
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(files):  # the volumes and the table are staged: then Ctrl-C (SIGTERM under `hpclab`)
        raise KeyboardInterrupt

    monkeypatch.setattr(processing, "_save_views", interrupted)
    with pytest.raises(KeyboardInterrupt):
        process(t1, out, overwrite=True, views=True, correct_bias=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder left either
    again = process(t1, out, overwrite=True, correct_bias=False)  # views of the earlier run would show other labels
    assert sorted(p.name for p in out.iterdir()) == sorted([*(p.name for p in again.outputs.values()), "notes.txt"])
    assert (out / "t1_n4.nii.gz").read_bytes() != before["t1_n4.nii.gz"]


def test_a_sigterm_during_the_commit_waits_for_the_last_rename(tmp_path, monkeypatch):
    for name in ("a.txt", "b.txt", "c.txt", "other.txt"):
        (tmp_path / name).write_text("old")
    rename = os.replace

    def rename_then_sigterm(src, dst):
        rename(src, dst)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", rename_then_sigterm)
    with pytest.raises(Interrupted), signals_raise():
        with output_set(tmp_path, ["a.txt", "b.txt", "c.txt"]) as staging:
            for name in ("a.txt", "b.txt"):
                (staging / name).write_text("new")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "new", "b.txt": "new", "other.txt": "old"}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_lost_in_a_destructor_still_stops_the_commit(tmp_path):
    (tmp_path / "a.txt").write_text("old")

    class Swallowing:
        def __del__(self):  # Python prints and drops the Interrupted raised here (nibabel has such a __del__)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted), signals_raise():
        with output_set(tmp_path, ["a.txt"]) as staging:
            (staging / "a.txt").write_text("new")
            Swallowing()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "old"}


@pytest.fixture(scope="module")
def gap_subject(tmp_path_factory) -> Path:
    """A cohort with one DICOM subject missing an acquired slice (dcm2niix writes an _Eq_ file for it)."""
    root = tmp_path_factory.mktemp("gaps")
    small = mri_data.downsample(mri_data.template_t1(), 3)
    mri_data.write_series(np.asarray(small.dataobj, dtype=np.float32), small.affine, root / "sub-gap" / "scan",
                          drop_slices=[30])
    return root


def test_cohort_flags_missing_slices_and_uses_the_interpolated_file_only_when_asked(gap_subject, tmp_path):
    plain = process_cohort(gap_subject, tmp_path / "plain", views=False, progress=False).table.iloc[0]
    assert plain["status"] == "warning" and "_Eq_" not in Path(plain["t1"]).name
    assert "missing slices" in plain["qc"] and "interpolation" in plain["qc"]
    asked = process_cohort(gap_subject, tmp_path / "asked", views=False, progress=False,
                           use_equalized=True).table.iloc[0]
    assert asked["status"] == "warning" and "_Eq_" in Path(asked["t1"]).name


def test_hpclab_mri_loads_no_heavy_library_before_its_first_real_work():
    """`hpclab mri ...` starts in about 0.5 s: scipy, torch, SimpleITK, pandas, matplotlib load when a step needs them."""
    code = ("import sys; from hpclab.cli import _build_parser; _build_parser('mri'); "
            "import hpclab.mri.processing, hpclab.mri.conversion, hpclab.mri.cohort, hpclab.mri.cli; "
            "print(sorted(m for m in ('scipy', 'torch', 'deepbet', 'SimpleITK', 'pandas', 'matplotlib', 'joblib') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
