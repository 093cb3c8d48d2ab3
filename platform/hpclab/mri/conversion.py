"""DICOM folder -> one NIfTI (+ BIDS JSON sidecar + metadata TXT) per series, with dcm2niix.

dcm2niix (the PyPI wheel ships the binary) writes into a private staging folder inside the output
folder; the results are moved into place only when none of them would replace an existing file,
so an earlier conversion is never lost or silently overwritten.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..safe_output import OutputError, atomic_output, check_output_dir
from .dicom_scan import MAX_DEPTH, FolderScan, describe_files, list_files, pixel_data_problem, scan_folder, slice_spacing_report
from .errors import ConversionError, ConversionWarning
from .metadata import build_metadata, deidentify_sidecar, format_metadata

#: dcm2niix exit codes (its console/nii_dicom_batch.h), for error messages.
DCM2NIIX_EXIT = {
    1: "unspecified error",
    2: "no valid DICOM files found",
    3: "version report",
    4: "corrupt DICOM file",
    5: "input folder invalid",
    6: "output folder invalid",
    7: "cannot write to output folder",
    8: "converted some but not all of the input DICOMs",
    9: "rename error",
    10: "incomplete volume",
}
_FORBIDDEN_WHEN_DEIDENTIFIED = {
    "%n": "patient name",
    "%i": "patient ID",
    "%g": "accession number",
    "%k": "study UID",
    "%j": "series UID",
    "%x": "study ID",
    "%t": "time",
}
_FOUND_LINE = re.compile(r"^Found (\d+) DICOM file", re.MULTILINE)
_CONVERT_LINE = re.compile(r"^Convert (\d+) DICOM as (.+?) \(([\dx]+)\)\s*$")


@dataclass(frozen=True)
class Series:
    """One converted series: its files, metadata fields and what went wrong on the way."""

    nifti: Path
    metadata_file: Path
    metadata: dict[str, str]
    sidecar: Path | None = None
    bval: Path | None = None
    bvec: Path | None = None
    equalized: Path | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def stem(self) -> str:
        """File name of :attr:`nifti` without ``.nii``/``.nii.gz``."""
        return nifti_stem(self.nifti)

    def load(self, equalized: bool = False) -> Any:
        """The NIfTI image (nibabel, lazy data); ``equalized=True`` loads dcm2niix's ``_Eq_`` file."""
        import nibabel as nib

        path = self.equalized if equalized else self.nifti
        if path is None:
            raise FileNotFoundError(f"series {self.nifti} has no equalized (_Eq_) file")
        return nib.load(path)

    def sidecar_json(self) -> dict[str, Any]:
        """The BIDS sidecar as a dict (empty when there is none)."""
        return json.loads(self.sidecar.read_text()) if self.sidecar else {}


def read_series(folder: str | Path) -> list[Series]:
    """The series an earlier :func:`convert` left in ``folder``, rebuilt from their metadata TXT files."""
    from .metadata import read_metadata

    folder = Path(folder)
    found = []
    for txt in sorted(folder.glob("*.txt")):
        md = read_metadata(txt)
        if "nifti" not in md or not (folder / md["nifti"]).exists():
            continue
        extra = {
            role: folder / md[key]
            for role, key in (("sidecar", "sidecar"), ("bval", "bval"), ("bvec", "bvec"), ("equalized", "equalized_nifti"))
            if key in md and (folder / md[key]).exists()
        }
        warn = () if md.get("warnings", "none") == "none" else tuple(md["warnings"].split(" | "))
        found.append(Series(nifti=folder / md["nifti"], metadata_file=txt, metadata=md, warnings=warn, **extra))
    return found


def nifti_stem(path: str | Path) -> str:
    """The file name without ``.nii.gz`` or ``.nii``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def dcm2niix_binary() -> Path:
    """Path of the dcm2niix binary shipped by the ``dcm2niix`` wheel (else one on PATH)."""
    try:
        import dcm2niix

        path = Path(dcm2niix.bin)
        if path.exists():
            return path
    except ImportError:
        pass
    found = shutil.which("dcm2niix")
    if found:
        return Path(found)
    raise ConversionError("dcm2niix is not installed: pip install dcm2niix (the wheel ships the binary)")


def dcm2niix_command(
    dicom_dir: Path,
    out_dir: Path,
    *,
    name_pattern: str = "%s_%d",
    compress: bool = True,
    binary: Path | None = None,
) -> list[str]:
    """The dcm2niix command line ``convert`` runs (BIDS sidecar, int16 output, search depth 9)."""
    return [
        str(binary or dcm2niix_binary()),
        "-b",
        "y",
        "-ba",
        "n",  # sidecar with identifiers; convert() strips them if asked
        "-l",
        "n",  # uint16 -> int16 so dcm2niix can write _Eq_ files for gaps
        "-z",
        "y" if compress else "n",
        "-d",
        str(MAX_DEPTH),
        "-f",
        name_pattern,
        "-o",
        str(out_dir),
        str(dicom_dir),
    ]


def convert(
    dicom_dir: str | Path,
    out_dir: str | Path,
    *,
    deidentify: bool = False,
    subject: str | None = None,
    name_pattern: str = "%s_%d",
    compress: bool = True,
    overwrite: bool = False,
) -> list[Series]:
    """Convert every series under ``dicom_dir`` to NIfTI + JSON sidecar + metadata TXT in ``out_dir``.

    ``deidentify`` drops names, IDs, birth date and dates from the sidecar and metadata and replaces
    UIDs by hashes (``subject`` becomes the subject id). Existing files are never replaced unless
    ``overwrite``; a clash raises :class:`ConversionError` and changes nothing.
    """
    src = Path(dicom_dir)
    dst = Path(out_dir)
    if not src.exists():
        raise ConversionError(f"DICOM folder {src} does not exist")
    if not src.is_dir():
        raise ConversionError(f"{src} is a file, not a folder: give the folder that holds the DICOM files")
    if deidentify:
        bad = [f"{k} ({v})" for k, v in _FORBIDDEN_WHEN_DEIDENTIFIED.items() if k in name_pattern]
        if bad:
            raise ValueError(f"name_pattern {name_pattern!r} would put identifying data in file names: " + ", ".join(bad))
    files = list_files(src)
    if not files:
        raise ConversionError(f"no DICOM files in {src} (the folder is empty)")
    created = not dst.exists()
    staging = _make_staging(dst)
    try:
        proc = subprocess.run(
            dcm2niix_command(src, staging, name_pattern=name_pattern, compress=compress),
            capture_output=True,
            text=True,
            check=False,
        )
        log = (proc.stdout or "") + (proc.stderr or "")
        found = _FOUND_LINE.search(log)
        if found is not None and int(found.group(1)) == len(files):
            scan = FolderScan(src, tuple(files), ())  # dcm2niix took every file: no need to read them
        else:  # read the headers ourselves to name what is not DICOM
            scan = scan_folder(src)
        if not scan.dicom:
            raise ConversionError(f"no DICOM files in {src} (files found: {describe_files(scan.other, src)})")
        if scan.other:
            warnings.warn(
                f"{len(scan.other)} file(s) in {src} are not DICOM and were skipped: {describe_files(scan.other, src)}",
                ConversionWarning,
                stacklevel=2,
            )
        converted = _parse_log(log)
        niftis = sorted(p for p in staging.iterdir() if p.name.endswith((".nii", ".nii.gz")) and "_Eq_" not in p.name)
        if not niftis:
            reason = DCM2NIIX_EXIT.get(proc.returncode, f"exit status {proc.returncode}")
            damaged = _damaged_files(scan.dicom, src)
            said = "; ".join(_notes(log)) or _tail(log, 1).strip()
            raise ConversionError(
                f"dcm2niix converted nothing from {src} ({reason}); {len(scan.dicom)} DICOM file(s) found"
                + (f"; {damaged}" if damaged else f", first: {describe_files(scan.dicom[:3], src)}")
                + f". dcm2niix said: {said}"
            )
        used = sum(n for n, _ in converted.values())
        if converted and used < len(scan.dicom):
            damaged = _damaged_files(scan.dicom, src)
            warnings.warn(
                f"dcm2niix used {used} of the {len(scan.dicom)} DICOM files in {src}"
                + (f"; {damaged}" if damaged else " (the others were duplicates or not images)"),
                ConversionWarning,
                stacklevel=2,
            )
        if proc.returncode != 0:
            warnings.warn(
                f"dcm2niix exited with {proc.returncode} ({DCM2NIIX_EXIT.get(proc.returncode, 'unknown')}) "
                f"converting {src}; {len(niftis)} series were written. dcm2niix said:\n{_tail(log)}",
                ConversionWarning,
                stacklevel=2,
            )
        plans = [_plan_series(n, staging, dst, src, scan.dicom, converted, deidentify, subject) for n in niftis]
        _check_clashes(plans, dst, overwrite)
        return [_commit(plan, dst) for plan in plans]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()  # a refused conversion leaves no trace


#: the prefix of :func:`convert`'s private staging folders (left behind only by a killed process)
CONVERT_PREFIX = ".hpclab-convert-"


def _make_staging(dst: Path) -> Path:
    """The private staging folder in ``dst`` (created, and checked writable, by safe_output's check)."""
    try:
        check_output_dir(dst)
        return Path(tempfile.mkdtemp(prefix=CONVERT_PREFIX, dir=dst))
    except (OutputError, OSError) as exc:
        raise ConversionError(f"output folder: {exc}") from None


def _parse_log(log: str) -> dict[str, tuple[int, list[str]]]:
    """Map output stem -> (number of DICOM files, dcm2niix warnings printed around it)."""
    out: dict[str, tuple[int, list[str]]] = {}
    pending: list[str] = []
    last: str | None = None
    for line in log.splitlines():
        line = line.strip()
        m = _CONVERT_LINE.match(line)
        if m:
            last = Path(m.group(2)).name
            out[last] = (int(m.group(1)), pending)
            pending = []
        elif line.startswith(("Warning:", "Error:")) or line.startswith("Only able"):
            pending.append(line)
    if pending and last is not None:
        out[last][1].extend(pending)
    return out


@dataclass
class _Plan:
    staged: dict[str, Path]  # role -> staged file
    final: dict[str, Path]  # role -> destination
    metadata_text: str
    metadata: dict[str, str]
    warnings: list[str]
    sidecar: dict[str, Any] | None


def _plan_series(
    nifti: Path,
    staging: Path,
    dst: Path,
    src: Path,
    dicom_files: Sequence[Path],
    converted: dict[str, tuple[int, list[str]]],
    deidentify: bool,
    subject: str | None,
) -> _Plan:
    import nibabel as nib

    stem = nifti_stem(nifti)
    ext = nifti.name[len(stem) :]
    staged: dict[str, Path] = {"nifti": nifti}
    for role, suffix in (("sidecar", ".json"), ("bval", ".bval"), ("bvec", ".bvec")):
        p = staging / f"{stem}{suffix}"
        if p.exists():
            staged[role] = p
    eq = sorted(staging.glob(f"{stem}_Eq_*{ext}"))
    if eq:
        staged["equalized"] = eq[0]
    sidecar = json.loads(staged["sidecar"].read_text()) if "sidecar" in staged else {}
    n_files, notes = converted.get(stem, (None, []))
    problems: list[str] = []
    spacing_flagged = any("Interslice distance varies" in n or "Missing images" in n for n in notes)
    if "equalized" in staged or spacing_flagged:
        report = slice_spacing_report(
            dicom_files, src, series_uid=sidecar.get("SeriesInstanceUID"), series_number=sidecar.get("SeriesNumber")
        )
        detail = "; ".join(report) if report else "dcm2niix reports uneven slice spacing"
        eq_note = (
            f"; dcm2niix also wrote {eq[0].name} with equal slice spacing, its missing slices "
            "interpolated from their neighbours (not measured): fine to look at, not to measure "
            "(cohort uses it only with --use-equalized)"
            if eq
            else ""
        )
        problems.append(
            f"series {sidecar.get('SeriesNumber', stem)} ({stem}): {detail}. "
            f"{stem}{ext} has the slices as acquired, so its geometry is wrong past the gap{eq_note}"
        )
    for problem in problems:
        warnings.warn(problem, ConversionWarning, stacklevel=4)
    all_warnings = problems + notes
    final = {role: dst / path.name for role, path in staged.items()}
    final["metadata"] = dst / f"{stem}.txt"
    files = {role: final[role].name if role in final else None for role in ("nifti", "sidecar", "bval", "bvec", "equalized")}
    header = nib.load(nifti).header
    fields = build_metadata(
        sidecar,
        header,
        deidentify=deidentify,
        subject=subject,
        files=files,
        n_dicom_files=n_files,
        source_folder=str(src),
        converter=f"dcm2niix {sidecar.get('ConversionSoftwareVersion', '(version unknown)')}",
        warnings=all_warnings,
    )
    if deidentify and sidecar:
        sidecar = deidentify_sidecar(sidecar)
    return _Plan(
        staged, final, format_metadata(fields), fields, all_warnings, sidecar if deidentify and "sidecar" in staged else None
    )


def _check_clashes(plans: list[_Plan], dst: Path, overwrite: bool) -> None:
    targets = [p for plan in plans for p in plan.final.values()]
    dupes = sorted({p.name for p in targets if targets.count(p) > 1})
    if dupes:
        raise ConversionError(
            f"two series would be written to the same file in {dst}: {', '.join(dupes)}; "
            "use a name_pattern that tells them apart (e.g. add %j or %u)"
        )
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise ConversionError(
            f"{dst} already holds {describe_files(existing, dst)} from an earlier conversion; nothing was "
            "changed. Convert into another folder, or pass overwrite=True (CLI: --overwrite) to replace them."
        )


def _commit(plan: _Plan, dst: Path) -> Series:
    if plan.sidecar is not None:
        plan.staged["sidecar"].write_text(json.dumps(plan.sidecar, indent=2) + "\n")
    for role, staged in plan.staged.items():
        staged.replace(plan.final[role])
    with atomic_output(plan.final["metadata"]) as tmp:
        tmp.write_text(plan.metadata_text)
    return Series(
        nifti=plan.final["nifti"],
        metadata_file=plan.final["metadata"],
        metadata=plan.metadata,
        sidecar=plan.final.get("sidecar"),
        bval=plan.final.get("bval"),
        bvec=plan.final.get("bvec"),
        equalized=plan.final.get("equalized"),
        warnings=tuple(plan.warnings),
    )


def _notes(log: str) -> list[str]:
    """dcm2niix's warning and error lines, without their prefix."""
    return [line.strip().split(":", 1)[1].strip() for line in log.splitlines() if line.strip().startswith(("Warning:", "Error:"))]


def _damaged_files(files: Sequence[Path], root: Path, limit: int = 5) -> str:
    """ "a.dcm is truncated: ...; b.dcm is ..." for the files whose image data cannot be used ("" if none)."""
    problems = [(f, why) for f in files if (why := pixel_data_problem(f)) is not None]
    text = "; ".join(
        f"{f.relative_to(root)} is {why}" if why.startswith(("truncated", "unreadable")) else f"{f.relative_to(root)}: {why}"
        for f, why in problems[:limit]
    )
    more = len(problems) - limit
    return text + (f"; and {more} more" if more > 0 else "")


def _tail(log: str, lines: int = 15) -> str:
    kept = [line for line in log.splitlines() if line.strip()]
    return "\n".join("  " + line for line in kept[-lines:])
