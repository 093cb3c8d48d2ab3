"""Whole pipeline (convert -> process -> stats -> views) for every subject of a cohort folder.

Locally with joblib (``n_jobs`` processes, tqdm progress; one subject's failure does not stop the
others) or as a SLURM job array with a summary job after it. Either way each subject's outcome
lands in ``OUT/<subject>/subject_summary.json`` and the cohort's in ``OUT/cohort_summary.csv``.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..interrupts import stop_worker_pools
from ..safe_output import TEMP_PREFIX, OutputError, atomic_output, check_output_dir, remove_temporaries
from .conversion import CONVERT_PREFIX, Series, convert, read_series
from .datalad_data import fetch, has_entries, is_dataset
from .dicom_scan import is_dicom
from .errors import MRIError
from .processing import process
from .slurm import JobResources, batch_script, submit

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.axes
    import pandas as pd

SUMMARY_NAME = "cohort_summary.csv"
SUBJECT_SUMMARY = "subject_summary.json"
SUBJECT_LIST = "cohort_subjects.txt"
COLUMNS = ("subject", "status", "error", "qc", "n_series", "t1", "brain_ml", "csf_ml", "gm_ml", "wm_ml", "seconds", "qc_status")
#: the volumes that group statistics summarize
VOLUME_COLUMNS = ("brain_ml", "csf_ml", "gm_ml", "wm_ml")
#: statuses a subject row can have; "warning" rows have results that need a look (the qc column says why)
STATUSES = ("ok", "warning", "failed", "done before")
_T1_NAME = re.compile(r"t1|mprage|spgr|bravo|tfl", re.IGNORECASE)


@dataclass(frozen=True)
class Subject:
    """One subject: its id (folder or file name) and its input (a DICOM folder or a NIfTI file)."""

    id: str
    path: Path


def find_subjects(root: str | Path) -> list[Subject]:
    """Subjects under ``root``: each sub-folder holding DICOM or NIfTI files (BIDS: ``sub-01/anat/…_T1w.nii.gz``),
    and each NIfTI file directly in ``root``.

    In a DataLad dataset the content may not be there yet: any non-hidden sub-folder with files
    (present or annex links) is a subject, and NIfTI links count before they are fetched.
    """
    root = Path(root)
    if not root.is_dir():
        raise MRIError(f"cohort folder {root} does not exist or is not a folder")
    dataset = is_dataset(root)
    subjects = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (has_entries(entry) if dataset else (nifti_t1(entry) is not None or _holds_dicom(entry))):
            subjects.append(Subject(entry.name, entry))
        elif (entry.is_file() or (dataset and entry.is_symlink())) and entry.name.endswith((".nii", ".nii.gz")):
            from .conversion import nifti_stem

            subjects.append(Subject(nifti_stem(entry), entry))
    return subjects


def nifti_t1(folder: Path) -> Path | None:
    """The T1 NIfTI of a BIDS-style subject folder (``anat/*_T1w.nii.gz``; else a T1-named or the largest NIfTI)."""
    niftis = sorted(p for p in folder.rglob("*") if p.name.endswith((".nii", ".nii.gz")) and ".git" not in p.parts)
    if not niftis:
        return None
    named = [p for p in niftis if _T1_NAME.search(p.name)]
    return max(named or niftis, key=lambda p: (p.stat().st_size if p.exists() else 0, p.name))


def select_subjects(found: list[Subject], wanted: Sequence[str] | None) -> list[Subject]:
    """The subjects named in ``wanted`` (all when None); an unknown name is an MRIError listing the known ones."""
    if wanted is None:
        return found
    by_id = {s.id: s for s in found}
    unknown = [w for w in wanted if w not in by_id]
    if unknown:
        raise MRIError(f"no subject {', '.join(unknown)} in the cohort; it has {', '.join(by_id) or 'none'}")
    return [by_id[w] for w in wanted]


def _holds_dicom(folder: Path) -> bool:
    return any(is_dicom(p) for p in folder.rglob("*") if p.is_file())


def choose_t1(series: list[Series]) -> Series:
    """The series to process: 3-D ones named like a T1 first, then the one with the most voxels."""

    def size(s: Series) -> int:
        dims = s.metadata.get("matrix", "").split(" x ")
        if s.metadata.get("n_volumes", "1") != "1" or len(dims) != 3:
            return 0
        return int(dims[0]) * int(dims[1]) * int(dims[2])

    three_d = [s for s in series if size(s) > 0]
    if not three_d:
        raise MRIError("no 3-D series to process (all are 4-D or 2-D): " + ", ".join(s.nifti.name for s in series))
    named = [
        s for s in three_d if _T1_NAME.search(s.metadata.get("series_description", "") + " " + s.metadata.get("protocol", ""))
    ]
    return max(named or three_d, key=size)


def run_subject(
    subject: Subject,
    out: str | Path,
    *,
    deidentify: bool = False,
    views: bool = True,
    threads: int | None = 1,
    overwrite: bool = False,
    use_equalized: bool = False,
) -> dict[str, Any]:
    """Convert (if DICOM), process and draw one subject into ``out/<id>``; returns its summary row.

    Never raises for a bad subject: the row says ``failed`` and why. The quality checks decide
    between ``ok``, ``warning`` and ``failed`` (the ``qc`` column gives the reasons). A series with
    missing slices is processed as acquired and flagged; dcm2niix's interpolated ``_Eq_`` file is
    used only with ``use_equalized``. A subject whose summary says ``ok`` from an earlier run is
    reported ``done before`` unless ``overwrite``; otherwise series converted earlier are reused
    (never converted over) and the processing outputs are redone.
    """
    start = time.perf_counter()
    subject_out = Path(out) / subject.id
    summary_file = subject_out / SUBJECT_SUMMARY
    if summary_file.exists() and not overwrite:
        previous = json.loads(summary_file.read_text())
        if previous.get("status") in ("ok", "warning"):
            return {**previous, "status": "done before", "seconds": 0.0}
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row["subject"] = subject.id
    try:
        bids_t1 = nifti_t1(subject.path) if subject.path.is_dir() else None
        if bids_t1 is not None:  # a BIDS-style folder (sub-01/anat/sub-01_T1w.nii.gz): no conversion
            t1, gaps = bids_t1, "_Eq_" in bids_t1.name
            row["n_series"] = 0
        elif subject.path.is_dir():
            earlier = [] if overwrite else read_series(subject_out / "nifti")
            series = earlier or convert(
                subject.path, subject_out / "nifti", deidentify=deidentify, subject=subject.id, overwrite=overwrite
            )
            chosen = choose_t1(series)
            gaps = chosen.equalized is not None
            t1 = chosen.equalized if use_equalized and chosen.equalized is not None else chosen.nifti
            row["n_series"] = len(series)
        else:
            t1, gaps = subject.path, "_Eq_" in Path(subject.path).name
            row["n_series"] = 0
        result = process(t1, subject_out / "process", threads=threads, overwrite=True, interpolated_slices=gaps, views=views)
        row["t1"] = str(t1)
        row["brain_ml"] = round(result.qc["brain_volume_ml"].value, 1)
        row["qc"] = result.qc.reasons or None
        row["qc_checks"] = result.qc.as_dict()
        volumes = result.volumes_ml
        row["csf_ml"], row["gm_ml"], row["wm_ml"] = (
            round(volumes.get(k, 0.0), 3) for k in ("CSF", "Gray-Matter", "White-Matter")
        )
        row["status"] = row["qc_status"] = result.qc.status
    except Exception as exc:  # one subject must not stop the cohort: record and go on
        row["status"] = "failed"
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc(limit=5)
    row["seconds"] = round(time.perf_counter() - start, 3)
    try:
        subject_out.mkdir(parents=True, exist_ok=True)
        with atomic_output(summary_file) as tmp:
            tmp.write_text(json.dumps(row, indent=2) + "\n")
    except OSError as exc:
        row["status"] = "failed"
        row["error"] = (row["error"] or "") + f"; cannot write {summary_file}: {exc.strerror}"
    return row


@dataclass(frozen=True)
class CohortResult:
    """The summary table of a cohort run (one row per subject) and where it was written."""

    table: pd.DataFrame
    summary_file: Path
    seconds: float
    include_failed: bool = False

    @property
    def failed(self) -> pd.DataFrame:
        """Rows of subjects that failed."""
        return self.table[self.table["status"] == "failed"]

    @property
    def included(self) -> pd.DataFrame:
        """Rows that group statistics count: subjects with volumes whose quality checks did not fail
        (a "done before" row keeps its checks' status in ``qc_status``), QC-failed ones too if ``include_failed``."""
        has_volumes = self.table["brain_ml"].notna()
        if self.include_failed:
            return self.table[has_volumes]
        return self.table[has_volumes & (self.table["qc_status"] != "failed") & (self.table["status"] != "failed")]

    @property
    def left_out(self) -> pd.DataFrame:
        """Rows that group statistics leave out (failed subjects: an error, or quality checks that say not a brain)."""
        return self.table[~self.table.index.isin(self.included.index)]

    def group_stats(self) -> pd.DataFrame:
        """n, mean, SD, min and max of each volume over :attr:`included` (one row per volume)."""
        import pandas as pd

        values = self.included[list(VOLUME_COLUMNS)].astype(float)
        return pd.DataFrame(
            {"n": values.count(), "mean": values.mean(), "sd": values.std(), "min": values.min(), "max": values.max()}
        ).rename_axis("volume")

    def group_note(self) -> str:
        """One sentence saying how many subjects group statistics count, which they leave out and why."""
        out = self.left_out
        counted = f"group statistics over {len(self.included)} of {len(self.table)} subjects"
        if out.empty:
            return counted
        why = ", ".join(
            f"{r.subject} ({'error' if isinstance(r.error, str) and r.error else 'quality checks failed'})"
            for r in out.itertuples()
        )
        hint = (
            ""
            if self.include_failed
            else (
                " (see the status, error and qc columns; include_failed=True, "
                "--include-failed, counts subjects whose quality checks failed)"
            )
        )
        return f"{counted}; left out as failed: {why}{hint}"

    def plot(self, ax: matplotlib.axes.Axes | None = None) -> matplotlib.axes.Axes:
        """Grouped bars of CSF/GM/WM volume (ml) per subject counted in group statistics; returns the axes."""
        from matplotlib.figure import Figure

        from .views import _notebook_display

        _notebook_display()
        ok = self.included
        if ax is None:
            ax = Figure(figsize=(max(4.0, 0.7 * len(ok) + 2), 3.5)).subplots()
        ok.set_index("subject")[["csf_ml", "gm_ml", "wm_ml"]].plot.bar(ax=ax)
        ax.set_ylabel("volume (ml)")
        return ax


def tail_threads(n_subjects: int, n_jobs: int, threads_per_job: int = 1) -> list[int]:
    """Threads for each subject, in dispatch order: ``threads_per_job``, more for the last ones.

    Subjects take unequal times, so the last ones run while other workers sit idle: when only
    ``k < n_jobs`` subjects are left to start, each of them gets ``n_jobs * threads_per_job // k``
    threads (with 2 jobs, the last subject gets both cores once the other job has finished).
    """
    n_jobs = max(1, n_jobs)
    budget = n_jobs * threads_per_job
    return [
        threads_per_job if (left := n_subjects - i) >= n_jobs else max(threads_per_job, budget // left) for i in range(n_subjects)
    ]


def process_cohort(
    root: str | Path,
    out: str | Path,
    n_jobs: int = 1,
    *,
    threads_per_job: int = 1,
    deidentify: bool = False,
    views: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    use_equalized: bool = False,
    subjects: Sequence[str] | None = None,
    include_failed: bool = False,
) -> CohortResult:
    """Run :func:`run_subject` for every subject of ``root`` with joblib (``n_jobs`` processes).

    Each job uses ``threads_per_job`` threads in N4 and k-means, except the last ``n_jobs - 1``
    subjects: they run while the other jobs have nothing left to do, so they share those jobs'
    threads (see :func:`tail_threads`). Shows a tqdm bar as subjects finish, then writes
    ``out/cohort_summary.csv`` and returns it as a :class:`CohortResult`. ``subjects`` (ids) picks
    some; in a DataLad dataset only their files are fetched (``datalad get``), nothing else. Group
    statistics (:meth:`CohortResult.group_stats`) leave failed subjects out unless ``include_failed``.
    """
    from joblib import Parallel, delayed, effective_n_jobs
    from tqdm.auto import tqdm

    chosen = select_subjects(find_subjects(root), subjects)
    if not chosen:
        raise MRIError(f"no subjects in {root}: expected sub-folders with DICOM files or NIfTI files")
    if is_dataset(root):
        fetch(root, [s.path for s in chosen])
    try:
        out = check_output_dir(out)
    except OutputError as exc:
        raise MRIError(str(exc)) from None
    start = time.perf_counter()
    threads = tail_threads(len(chosen), effective_n_jobs(n_jobs), threads_per_job)
    jobs = (
        delayed(run_subject)(
            s, out, deidentify=deidentify, views=views, threads=t, overwrite=overwrite, use_equalized=use_equalized
        )
        for s, t in zip(chosen, threads, strict=True)
    )
    rows = []
    try:
        with tqdm(total=len(chosen), desc="subjects", unit="subj", disable=not progress, file=sys.stderr) as bar:
            for row in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
                rows.append(row)
                bar.set_postfix_str(f"{row['subject']}: {row['status']}")
                bar.update()
    except BaseException:
        # SIGTERM, Ctrl-C or a failing pool: the workers are killed mid-subject, so their staging
        # folders' own clean-up never runs; remove them once no worker can write there any more
        stop_worker_pools()
        for subject in chosen:
            remove_temporaries(out / subject.id, patterns=(f"{TEMP_PREFIX}*", f"{CONVERT_PREFIX}*"))
        raise
    return _write_summary(rows, out, time.perf_counter() - start, include_failed=include_failed)


def _write_summary(rows: list[dict[str, Any]], out: Path, seconds: float, *, include_failed: bool = False) -> CohortResult:
    import pandas as pd

    table = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    if table["qc_status"].isna().any():  # summaries written before qc_status existed: their status said it
        table["qc_status"] = table["qc_status"].fillna(table["status"].where(table["brain_ml"].notna()))
    table = table.sort_values("subject").reset_index(drop=True)
    path = out / SUMMARY_NAME
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)
    return CohortResult(table=table, summary_file=path, seconds=seconds, include_failed=include_failed)


def summarize(out: str | Path, *, include_failed: bool = False) -> CohortResult:
    """Collect ``out/*/subject_summary.json`` (e.g. after a SLURM array) into ``out/cohort_summary.csv``."""
    out = Path(out)
    listed = (out / SUBJECT_LIST).read_text().split() if (out / SUBJECT_LIST).exists() else None
    names = listed if listed is not None else sorted(p.parent.name for p in out.glob(f"*/{SUBJECT_SUMMARY}"))
    rows = []
    for name in names:
        path = out / name / SUBJECT_SUMMARY
        if path.exists():
            rows.append(json.loads(path.read_text()))
        else:
            rows.append({"subject": name, "status": "failed", "error": f"no {SUBJECT_SUMMARY}: the task did not finish"})
    return _write_summary(rows, out, seconds=0.0, include_failed=include_failed)


def run_task(root: str | Path, out: str | Path, index: int, **options: Any) -> dict[str, Any]:
    """Run subject number ``index`` of ``out/cohort_subjects.txt`` (one SLURM array task)."""
    out = Path(out)
    names = (out / SUBJECT_LIST).read_text().split()
    if not 0 <= index < len(names):
        raise MRIError(f"task index {index} outside 0..{len(names) - 1} of {out / SUBJECT_LIST}")
    by_id = {s.id: s for s in find_subjects(root)}
    if names[index] not in by_id:
        raise MRIError(f"subject {names[index]} of {out / SUBJECT_LIST} is no longer in {root}")
    return run_subject(by_id[names[index]], out, **options)


@dataclass(frozen=True)
class SlurmCohort:
    """A cohort submitted to SLURM: the array job, the summary job that runs after it, their scripts."""

    array_job: str
    summary_job: str
    array_script: Path
    summary_script: Path
    subjects: tuple[str, ...]
    summary_file: Path


def cohort_scripts(
    root: str | Path,
    out: str | Path,
    subjects: list[str],
    *,
    resources: JobResources = JobResources(),
    max_parallel: int | None = None,
    deidentify: bool = False,
    views: bool = True,
    use_equalized: bool = False,
    python: str = sys.executable,
) -> tuple[str, str]:
    """(array script, summary script) for a cohort: one array task per subject, then the summary."""
    root, out = Path(root).resolve(), Path(out).resolve()
    array = f"0-{len(subjects) - 1}" + (f"%{max_parallel}" if max_parallel else "")
    base = [python, "-m", "hpclab", "mri", "cohort", str(root), str(out)]
    flags = (
        (["--deidentify"] if deidentify else [])
        + ([] if views else ["--no-views"])
        + (["--use-equalized"] if use_equalized else [])
    )
    task = " ".join(_quote(w) for w in base + flags) + ' --task-index "$SLURM_ARRAY_TASK_ID"'
    array_script = batch_script([task], job_name="hpclab-mri-cohort", log_dir=out / "slurm", resources=resources, array=array)
    summary_script = batch_script(
        [base + ["--summarize"]],
        job_name="hpclab-mri-cohort-summary",
        log_dir=out / "slurm",
        resources=JobResources(cpus=1, mem="1G", time="00:10:00", partition=resources.partition, account=resources.account),
    )
    return array_script, summary_script


def submit_cohort(
    root: str | Path,
    out: str | Path,
    *,
    resources: JobResources = JobResources(),
    max_parallel: int | None = None,
    deidentify: bool = False,
    views: bool = True,
    use_equalized: bool = False,
    subjects: Sequence[str] | None = None,
) -> SlurmCohort:
    """Submit the cohort as a SLURM job array plus a summary job (``afterany``); returns the job ids.

    ``subjects`` (ids) picks some, as in :func:`process_cohort`: only they get array tasks, and in a
    DataLad dataset only their files are fetched (``datalad get``, here, before anything is submitted:
    the tasks read the dataset from the shared file system).
    """
    chosen = select_subjects(find_subjects(root), subjects)
    if not chosen:
        raise MRIError(f"no subjects in {root}: expected sub-folders with DICOM files or NIfTI files")
    if is_dataset(root):
        fetch(root, [s.path for s in chosen])
    ids = [s.id for s in chosen]
    out = Path(out).resolve()
    (out / "slurm").mkdir(parents=True, exist_ok=True)
    (out / SUBJECT_LIST).write_text("\n".join(ids) + "\n")
    array_text, summary_text = cohort_scripts(
        root,
        out,
        ids,
        resources=resources,
        max_parallel=max_parallel,
        deidentify=deidentify,
        views=views,
        use_equalized=use_equalized,
    )
    array_path, summary_path = out / "slurm" / "cohort_array.sbatch", out / "slurm" / "cohort_summary.sbatch"
    array_path.write_text(array_text)
    summary_path.write_text(summary_text)
    array_job = submit(array_path)
    summary_job = submit(summary_path, dependency=f"afterany:{array_job}")
    return SlurmCohort(array_job, summary_job, array_path, summary_path, tuple(ids), out / SUMMARY_NAME)


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)
