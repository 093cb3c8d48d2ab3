"""``hpclab mri convert|process|stats|cohort``: the MRI pipeline from the command line."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..slurm.flags import add_slurm_flags

if TYPE_CHECKING:  # pragma: no cover
    from .cohort import CohortResult


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``mri`` command and its sub-commands on the top-level ``hpclab`` parser."""
    p_mri = sub.add_parser("mri", help="MRI pipeline: DICOM -> NIfTI, processing, segstats, cohorts")
    msub = p_mri.add_subparsers(dest="mri_command", metavar="STEP")

    c = msub.add_parser("convert", help="DICOM folder -> NIfTI + JSON sidecar + metadata TXT per series")
    c.add_argument("dicom_dir", type=Path, metavar="DICOM_DIR")
    c.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    c.add_argument("--deidentify", action="store_true", help="drop names, IDs and dates; hash UIDs")
    c.add_argument("--subject", help="subject id to write (default: the DICOM PatientID)")
    c.add_argument("--overwrite", action="store_true", help="replace files of an earlier conversion")

    p = msub.add_parser("process", help="brain mask, N4 bias correction, CSF/GM/WM labels and segstats")
    p.add_argument("nifti", type=Path, metavar="NIFTI")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    strip = p.add_mutually_exclusive_group()
    strip.add_argument(
        "--skull-strip",
        dest="skull_strip",
        action="store_true",
        default=None,
        help="the input is a whole head (default: decide from the image)",
    )
    strip.add_argument("--no-skull-strip", dest="skull_strip", action="store_false", help="the input is already skull-stripped")
    p.add_argument("--no-bias-correction", action="store_true", help="skip N4")
    p.add_argument("--no-views", action="store_true", help="do not write the PNG views")
    p.add_argument("--threads", type=int, default=None, help="threads for N4 and k-means (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")

    s = msub.add_parser("stats", help="FreeSurfer mri_segstats table for a label volume")
    s.add_argument("labels", type=Path, metavar="LABELS")
    s.add_argument("intensity", type=Path, metavar="INTENSITY")
    s.add_argument("--lut", help="FreeSurferColorLUT-format file, or 'aseg' / 'tissue'")
    s.add_argument("--out", type=Path, help="write the table here (default: print it)")
    s.add_argument("--empty", action="store_true", help="also list LUT labels with no voxels")
    s.add_argument("--exclude", type=int, nargs="*", default=[0], help="label ids to leave out (default: 0)")

    k = msub.add_parser("cohort", help="the whole pipeline for every subject of a folder")
    k.add_argument("root", type=Path, metavar="ROOT")
    k.add_argument("out", type=Path, metavar="OUT")
    mode = k.add_mutually_exclusive_group()
    mode.add_argument("--jobs", type=int, default=1, metavar="N", help="local parallel jobs (joblib)")
    mode.add_argument("--slurm", action="store_true", help="submit a SLURM job array and a summary job")
    mode.add_argument("--task-index", type=int, metavar="I", help=argparse.SUPPRESS)
    mode.add_argument("--summarize", action="store_true", help="collect subject summaries into the CSV")
    k.add_argument("--threads-per-job", type=int, default=1)
    k.add_argument("--max-parallel", type=int, help="SLURM: at most this many array tasks at once")
    add_slurm_flags(
        k,
        ("partition", "time", "mem", "cpus", "account"),
        defaults={"time": "02:00:00", "mem": "4G", "cpus": 1},
        help_for={
            "time": "SLURM: time limit per array task",
            "mem": "SLURM: memory per array task",
            "cpus": "SLURM: CPUs per array task",
        },
    )
    k.add_argument("--deidentify", action="store_true")
    k.add_argument("--no-views", action="store_true")
    k.add_argument(
        "--subjects",
        type=lambda text: [w for w in text.split(",") if w],
        metavar="ID,ID,...",
        help="process only these subjects, locally or with --slurm (in a DataLad dataset, only they are fetched)",
    )
    k.add_argument(
        "--use-equalized",
        action="store_true",
        help="process dcm2niix's _Eq_ file (missing slices filled by interpolation) where a series has gaps",
    )
    k.add_argument("--overwrite", action="store_true")
    k.add_argument("--no-progress", action="store_true")
    k.add_argument(
        "--include-failed",
        action="store_true",
        help="count subjects whose quality checks failed (not a brain, cut field of view) in group statistics",
    )
    p_mri.set_defaults(_mri_parser=p_mri, run=run)


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``hpclab mri ...`` command; print errors in one line and return the exit status.

    With ``--debug`` (``args.debug``, set by :func:`hpclab.cli.main`) errors are raised, so the traceback shows.
    """
    from .errors import MRIError

    if not getattr(args, "mri_command", None):
        args._mri_parser.print_help()
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        try:
            return _COMMANDS[args.mri_command](args)
        except (MRIError, FileNotFoundError, ValueError, RuntimeError) as exc:
            from ..cli import one_line, report_error

            return report_error(args, exc, f"hpclab mri {args.mri_command}: error: {one_line(exc)}", 1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
    from .conversion import convert

    series = convert(args.dicom_dir, args.out_dir, deidentify=args.deidentify, subject=args.subject, overwrite=args.overwrite)
    for s in series:
        md = s.metadata
        extra = f" (+ {s.equalized.name})" if s.equalized else ""
        print(
            f"{s.nifti}{extra}: {md.get('series_description', '?')}, {md.get('matrix')} x {md.get('n_volumes')} "
            f"vol, {md.get('voxel_size_mm')} mm; metadata {s.metadata_file}"
        )
    return 0


def _process(args: argparse.Namespace) -> int:
    from .processing import process

    result = process(
        args.nifti,
        args.out_dir,
        skull_strip=args.skull_strip,
        correct_bias=not args.no_bias_correction,
        threads=args.threads,
        overwrite=args.overwrite,
        views=not args.no_views,
    )
    for role, path in result.outputs.items():  # all written, views included, before the first line
        print(f"{role}: {path}")
    for name, ml in result.volumes_ml.items():
        print(f"{name}: {ml:.1f} ml")
    print(f"quality: {result.qc.status}" + (f" ({result.qc.reasons})" if result.qc.reasons else ""))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .stats import segstats

    stats = segstats(args.labels, args.intensity, args.lut, exclude=args.exclude, empty=args.empty)
    text = stats.to_text()
    if args.out:
        if args.out.exists():
            print(f"hpclab mri stats: error: {args.out} exists; remove it or choose another --out", file=sys.stderr)
            return 1
        from ..safe_output import atomic_output

        with atomic_output(args.out) as tmp:
            tmp.write_text(text)
        print(f"wrote {args.out} ({len(stats.table)} structures)")
    else:
        sys.stdout.write(text)
    return 0


def _cohort(args: argparse.Namespace) -> int:
    from . import cohort
    from .slurm import JobResources

    options = {"deidentify": args.deidentify, "views": not args.no_views, "use_equalized": args.use_equalized}
    if args.task_index is not None:
        row = cohort.run_task(
            args.root, args.out, args.task_index, overwrite=args.overwrite, threads=args.threads_per_job, **options
        )
        print(f"{row['subject']}: {row['status']} {row.get('error') or ''}".rstrip())
        return 0 if row["status"] != "failed" else 1
    if args.summarize:
        result = cohort.summarize(args.out, include_failed=args.include_failed)
        print(result.table.to_string(index=False))
        _print_group(result)
        print(f"summary: {result.summary_file}")
        return 0
    if args.slurm:
        resources = JobResources(cpus=args.cpus, mem=args.mem, time=args.time, partition=args.partition, account=args.account)
        sub = cohort.submit_cohort(
            args.root, args.out, resources=resources, max_parallel=args.max_parallel, subjects=args.subjects, **options
        )
        print(
            f"submitted array job {sub.array_job} ({len(sub.subjects)} subjects) and summary job "
            f"{sub.summary_job}; the summary will be {sub.summary_file}"
        )
        return 0
    result = cohort.process_cohort(
        args.root,
        args.out,
        n_jobs=args.jobs,
        threads_per_job=args.threads_per_job,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        subjects=args.subjects,
        include_failed=args.include_failed,
        **options,
    )
    print(result.table.to_string(index=False))
    _print_group(result)
    print(f"summary: {result.summary_file} ({len(result.failed)} failed, {result.seconds:.1f} s)")
    return 1 if len(result.failed) else 0


def _print_group(result: CohortResult) -> None:
    if not result.included.empty:
        print(result.group_stats().round(1).to_string())
    print(result.group_note())


_COMMANDS = {"convert": _convert, "process": _process, "stats": _stats, "cohort": _cohort}
