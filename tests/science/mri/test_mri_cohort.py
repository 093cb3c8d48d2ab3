"""Cohorts: joblib with progress, failures recorded not fatal, resumable; SLURM scripts and a real SLURM run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from hpclab.mri import find_subjects, process_cohort, summarize
from hpclab.mri.cohort import cohort_scripts, submit_cohort, tail_threads
from hpclab.mri.external import (aseg_stats_command, bet_command, fast_command, first_command, freesurfer_script,
                                 fsl_script, mri_segstats_command, recon_all_command)
from hpclab.mri.slurm import JobResources, batch_script, wait

from support import mri_data
from support.paths import REPO_ROOT

REPO = REPO_ROOT


def make_cohort(root: Path, n_dicom: int = 2, with_nifti: bool = True, with_bad: bool = True) -> None:
    """Small subjects from the template (3 mm): DICOM folders, a NIfTI file, and a corrupt DICOM folder."""
    small = mri_data.downsample(mri_data.template_t1(), 3)
    data = np.asarray(small.dataobj, dtype=np.float32)
    for k in range(n_dicom):
        scaled = np.rint(data * (0.8 + 0.2 * k)).astype(np.float32)
        mri_data.write_series(scaled, small.affine, root / f"sub-{k + 1:02d}" / "scan", patient_id=f"P{k}")
    if with_nifti:
        nib.save(small, root / "sub-nifti.nii.gz")
    if with_bad:
        bad = root / "sub-bad"
        bad.mkdir(parents=True)
        (bad / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 10)


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root)
    return root


def test_subjects_are_found_by_folder_and_file(cohort_root):
    assert [(s.id, s.path.name) for s in find_subjects(cohort_root)] == [
        ("sub-01", "sub-01"), ("sub-02", "sub-02"), ("sub-bad", "sub-bad"), ("sub-nifti", "sub-nifti.nii.gz")]


def test_parallel_cohort_records_failures_and_resumes(cohort_root, tmp_path, capsys):
    out = tmp_path / "out"
    result = process_cohort(cohort_root, out, n_jobs=2, deidentify=True)
    err = capsys.readouterr().err
    assert "subjects" in err and "4/4" in err  # tqdm progress
    table = result.table.set_index("subject")
    assert table["status"].to_dict() == {"sub-01": "ok", "sub-02": "ok", "sub-bad": "failed", "sub-nifti": "ok"}
    assert "ConversionError" in table.loc["sub-bad", "error"] and "sub-bad" in table.loc["sub-bad", "error"]
    for sid in ("sub-01", "sub-02", "sub-nifti"):
        assert 900 < table.loc[sid, "gm_ml"] + table.loc[sid, "wm_ml"] < 1800
        assert len(list((out / sid / "process").glob("*_tissue.nii.gz"))) == 1
        assert len(list((out / sid / "process").glob("*_ortho.png"))) == 1
    # 0.8 vs 1.0 scaling of the same brain gives the same tissue volumes
    assert table.loc["sub-01", "gm_ml"] == pytest.approx(table.loc["sub-02", "gm_ml"], rel=0.02)
    md = next((out / "sub-01" / "nifti").glob("*.txt")).read_text()
    assert "subject_id         : sub-01" in md and "P0" not in md  # de-identified, subject from folder
    on_disk = pd.read_csv(result.summary_file)
    assert on_disk["subject"].tolist() == ["sub-01", "sub-02", "sub-bad", "sub-nifti"]
    again = process_cohort(cohort_root, out, n_jobs=1, progress=False).table.set_index("subject")
    assert again["status"].to_dict() == {"sub-01": "done before", "sub-02": "done before", "sub-bad": "failed",
                                         "sub-nifti": "done before"}
    assert again.loc["sub-01", "gm_ml"] == table.loc["sub-01", "gm_ml"]
    # an interrupted subject (no summary): its conversion is reused, not redone, and processing is redone
    nifti_files = {p: p.stat().st_mtime_ns for p in (out / "sub-02" / "nifti").iterdir()}
    tissue = next((out / "sub-02" / "process").glob("*_tissue.nii.gz"))
    tissue_mtime = tissue.stat().st_mtime_ns
    (out / "sub-02" / "subject_summary.json").unlink()
    redo = process_cohort(cohort_root, out, n_jobs=1, progress=False).table.set_index("subject")
    assert redo.loc["sub-02", "status"] == "ok" and redo.loc["sub-02", "gm_ml"] == table.loc["sub-02", "gm_ml"]
    assert {p: p.stat().st_mtime_ns for p in (out / "sub-02" / "nifti").iterdir()} == nifti_files
    assert tissue.stat().st_mtime_ns > tissue_mtime


def test_last_subjects_get_the_threads_of_jobs_that_have_finished():
    assert tail_threads(8, 1) == [1] * 8  # serial: one thread throughout
    assert tail_threads(8, 2) == [1] * 7 + [2]  # the last subject runs alone once the other job is done
    assert tail_threads(6, 4) == [1, 1, 1, 1, 2, 4]
    assert tail_threads(6, 4, threads_per_job=2) == [2, 2, 2, 2, 4, 8]
    assert tail_threads(1, 2) == [2]


def test_array_and_summary_scripts_line_by_line(tmp_path):
    array, summary = cohort_scripts("/data/cohort", "/scratch/out", ["a", "b", "c"],
                                    resources=JobResources(cpus=2, mem="6G", time="01:00:00", partition="cpu"),
                                    max_parallel=2, deidentify=True, python="/opt/venv/bin/python")
    assert array.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=hpclab-mri-cohort",
        "#SBATCH --output=/scratch/out/slurm/%x-%A_%a.out",
        "#SBATCH --array=0-2%2",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --partition=cpu",
        "#SBATCH --mem=6G",
        "#SBATCH --time=01:00:00",
        "set -euo pipefail",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        '/opt/venv/bin/python -m hpclab mri cohort /data/cohort /scratch/out --deidentify '
        '--task-index "$SLURM_ARRAY_TASK_ID"',
    ]
    assert summary.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=hpclab-mri-cohort-summary",
        "#SBATCH --output=/scratch/out/slurm/%x-%j.out",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --partition=cpu",
        "#SBATCH --mem=1G",
        "#SBATCH --time=00:10:00",
        "set -euo pipefail",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        "/opt/venv/bin/python -m hpclab mri cohort /data/cohort /scratch/out --summarize",
    ]


def test_freesurfer_and_fsl_command_lines():
    assert recon_all_command("bert", "/d/t1.nii.gz", "/subjects", threads=4) == [
        "recon-all", "-s", "bert", "-i", "/d/t1.nii.gz", "-sd", "/subjects", "-all", "-threads", "4"]
    assert mri_segstats_command("aseg.mgz", "aseg.stats", intensity="norm.mgz", ctab="LUT.txt", pv="norm.mgz") == [
        "mri_segstats", "--seg", "aseg.mgz", "--sum", "aseg.stats", "--pv", "norm.mgz", "--in", "norm.mgz",
        "--in-intensity-name", "norm", "--in-intensity-units", "MR", "--ctab", "LUT.txt", "--excludeid", "0",
        "--nonempty"]
    assert " ".join(aseg_stats_command("bert", "/fs")) == (
        "mri_segstats --seed 1234 --seg mri/aseg.mgz --sum stats/aseg.stats --pv mri/norm.mgz --empty "
        "--brainmask mri/brainmask.mgz --brain-vol-from-seg --excludeid 0 --excl-ctxgmwm --supratent "
        "--subcortgray --in mri/norm.mgz --in-intensity-name norm --in-intensity-units MR --etiv "
        "--surf-wm-vol --surf-ctx-vol --totalgray --euler --ctab /fs/ASegStatsLUT.txt --subject bert")
    assert bet_command("t1.nii.gz", "brain.nii.gz") == ["bet", "t1.nii.gz", "brain.nii.gz", "-f", "0.5", "-R"]
    assert fast_command("brain.nii.gz", "s1_fast") == ["fast", "-t", "1", "-n", "3", "-B", "-o", "s1_fast",
                                                       "brain.nii.gz"]
    assert first_command("t1.nii.gz", "s1_first") == ["run_first_all", "-i", "t1.nii.gz", "-o", "s1_first"]


def test_freesurfer_and_fsl_job_scripts():
    fs = freesurfer_script("bert", "/d/my t1.nii.gz", "/subjects", log_dir="/logs")
    assert fs.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=recon-all-bert",
        "#SBATCH --output=/logs/%x-%j.out",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G",
        "#SBATCH --time=24:00:00",
        "set -euo pipefail",
        "module load freesurfer",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        "export SUBJECTS_DIR=/subjects",
        "recon-all -s bert -i '/d/my t1.nii.gz' -sd /subjects -all -threads 4",
    ]
    fsl = fsl_script("s1", "/d/t1.nii.gz", "/out/s1", log_dir="/logs").splitlines()
    assert fsl[-4:] == [
        "mkdir -p /out/s1",
        "bet /d/t1.nii.gz /out/s1/s1_brain.nii.gz -f 0.5 -R",
        "fast -t 1 -n 3 -B -o /out/s1/s1_fast /out/s1/s1_brain.nii.gz",
        "run_first_all -i /d/t1.nii.gz -o /out/s1/s1_first",
    ]
    assert "module load fsl" in fsl and "export FSLOUTPUTTYPE=NIFTI_GZ" in fsl
    assert batch_script([["echo", "hi"]], job_name="j", log_dir="/l").splitlines()[-1] == "echo hi"


@pytest.fixture
def slurm_conf(slurm_cluster, monkeypatch) -> str:
    """The shared dev cluster (conftest's slurm_cluster) as this process's SLURM_CONF: sbatch and squeue use it."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    return slurm_cluster


def test_cohort_as_a_real_slurm_job_array(slurm_conf, tmp_path):
    root, out = tmp_path / "cohort", tmp_path / "out"
    make_cohort(root, n_dicom=2, with_nifti=False, with_bad=True)
    sub = submit_cohort(root, out, resources=JobResources(cpus=1, mem="1G", time="00:20:00"), views=False)
    assert sub.subjects == ("sub-01", "sub-02", "sub-bad")
    states = wait([sub.array_job, sub.summary_job], timeout=400, poll=1.0)
    tasks = {k: v for k, v in states.items() if k.startswith(f"{sub.array_job}_")}
    assert sorted(tasks) == [f"{sub.array_job}_{i}" for i in range(3)]
    assert tasks[f"{sub.array_job}_2"] == "FAILED"  # the corrupt subject's task exits 1
    assert tasks[f"{sub.array_job}_0"] == tasks[f"{sub.array_job}_1"] == "COMPLETED"
    assert states[sub.summary_job] == "COMPLETED"  # afterany: runs even though one task failed
    table = pd.read_csv(sub.summary_file).set_index("subject")
    assert table["status"].to_dict() == {"sub-01": "ok", "sub-02": "ok", "sub-bad": "failed"}
    assert (table.loc[["sub-01", "sub-02"], "gm_ml"] > 300).all()
    logs = sorted(p.name for p in (out / "slurm").glob("*.out"))
    assert logs == sorted([f"hpclab-mri-cohort-{sub.array_job}_{i}.out" for i in range(3)]
                          + [f"hpclab-mri-cohort-summary-{sub.summary_job}.out"])
    assert json.loads((out / "sub-01" / "subject_summary.json").read_text())["status"] == "ok"
    assert summarize(out).table["subject"].tolist() == ["sub-01", "sub-02", "sub-bad"]
