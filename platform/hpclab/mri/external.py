"""Thin wrappers for FreeSurfer and FSL where a site has them (an HPC module): pure command builders
and per-subject SLURM batch scripts. Nothing here runs the tools itself except :func:`submit_subject`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from .slurm import JobResources, batch_script, submit


def available(tool: str) -> bool:
    """True when ``tool`` (e.g. ``recon-all``, ``fast``) is on PATH."""
    return shutil.which(tool) is not None


def recon_all_command(
    subject: str, t1: str | Path, subjects_dir: str | Path, *, threads: int = 1, directive: str = "-all"
) -> list[str]:
    """``recon-all`` for one subject from a T1 NIfTI (the full stream by default)."""
    command = ["recon-all", "-s", subject, "-i", str(t1), "-sd", str(subjects_dir), directive]
    if threads > 1:
        command += ["-threads", str(threads)]
    return command


def mri_segstats_command(
    seg: str | Path,
    summary: str | Path,
    *,
    intensity: str | Path | None = None,
    ctab: str | Path | None = None,
    pv: str | Path | None = None,
    exclude: Sequence[int] = (0,),
    non_empty: bool = True,
    intensity_name: str = "norm",
) -> list[str]:
    """``mri_segstats`` writing a summary table; ``pv`` adds FreeSurfer's partial-volume correction."""
    command = ["mri_segstats", "--seg", str(seg), "--sum", str(summary)]
    if pv is not None:
        command += ["--pv", str(pv)]
    if intensity is not None:
        command += ["--in", str(intensity), "--in-intensity-name", intensity_name, "--in-intensity-units", "MR"]
    if ctab is not None:
        command += ["--ctab", str(ctab)]
    if exclude:
        command += ["--excludeid", *[str(i) for i in exclude]]
    command.append("--nonempty" if non_empty else "--empty")
    return command


def aseg_stats_command(subject: str, freesurfer_home: str = "$FREESURFER_HOME") -> list[str]:
    """The ``mri_segstats`` call recon-all makes for ``stats/aseg.stats`` (run inside the subject folder)."""
    return [
        "mri_segstats",
        "--seed",
        "1234",
        "--seg",
        "mri/aseg.mgz",
        "--sum",
        "stats/aseg.stats",
        "--pv",
        "mri/norm.mgz",
        "--empty",
        "--brainmask",
        "mri/brainmask.mgz",
        "--brain-vol-from-seg",
        "--excludeid",
        "0",
        "--excl-ctxgmwm",
        "--supratent",
        "--subcortgray",
        "--in",
        "mri/norm.mgz",
        "--in-intensity-name",
        "norm",
        "--in-intensity-units",
        "MR",
        "--etiv",
        "--surf-wm-vol",
        "--surf-ctx-vol",
        "--totalgray",
        "--euler",
        "--ctab",
        f"{freesurfer_home}/ASegStatsLUT.txt",
        "--subject",
        subject,
    ]


def bet_command(t1: str | Path, out: str | Path, *, frac: float = 0.5, robust: bool = True) -> list[str]:
    """FSL ``bet`` brain extraction (``-R``: robust centre estimation)."""
    command = ["bet", str(t1), str(out), "-f", f"{frac:g}"]
    if robust:
        command.append("-R")
    return command


def fast_command(
    brain: str | Path, out_base: str | Path, *, n_classes: int = 3, image_type: int = 1, bias_output: bool = True
) -> list[str]:
    """FSL ``fast`` tissue segmentation of a brain-extracted image (type 1 = T1, 3 classes)."""
    command = ["fast", "-t", str(image_type), "-n", str(n_classes)]
    if bias_output:
        command.append("-B")
    command += ["-o", str(out_base), str(brain)]
    return command


def first_command(t1: str | Path, out_base: str | Path, *, brain_extracted: bool = False) -> list[str]:
    """FSL FIRST subcortical segmentation (``run_first_all``)."""
    command = ["run_first_all", "-i", str(t1), "-o", str(out_base)]
    if brain_extracted:
        command.append("-b")
    return command


def freesurfer_script(
    subject: str,
    t1: str | Path,
    subjects_dir: str | Path,
    *,
    log_dir: str | Path,
    resources: JobResources = JobResources(cpus=4, mem="8G", time="24:00:00"),
    modules: Sequence[str] = ("freesurfer",),
) -> str:
    """Batch script: recon-all for one subject (aseg.stats comes with it) as one SLURM job."""
    return batch_script(
        [recon_all_command(subject, t1, subjects_dir, threads=resources.cpus)],
        job_name=f"recon-all-{subject}",
        log_dir=log_dir,
        resources=resources,
        modules=modules,
        env={"SUBJECTS_DIR": str(subjects_dir)},
    )


def fsl_script(
    subject: str,
    t1: str | Path,
    out_dir: str | Path,
    *,
    log_dir: str | Path,
    resources: JobResources = JobResources(cpus=1, mem="8G", time="04:00:00"),
    modules: Sequence[str] = ("fsl",),
) -> str:
    """Batch script: bet, fast and run_first_all for one subject as one SLURM job."""
    out = Path(out_dir)
    brain = out / f"{subject}_brain.nii.gz"
    return batch_script(
        [
            ["mkdir", "-p", str(out)],
            bet_command(t1, brain),
            fast_command(brain, out / f"{subject}_fast"),
            first_command(t1, out / f"{subject}_first"),
        ],
        job_name=f"fsl-{subject}",
        log_dir=log_dir,
        resources=resources,
        modules=modules,
        env={"FSLOUTPUTTYPE": "NIFTI_GZ"},
    )


def submit_subject(script_text: str, script_path: str | Path) -> str:
    """Write ``script_text`` to ``script_path`` and submit it with sbatch; returns the job id."""
    path = Path(script_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script_text)
    return submit(path)
