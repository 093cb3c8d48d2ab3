"""Find DICOM files in a folder tree and explain uneven slice spacing in a series (pydicom headers)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: dcm2niix is run with ``-d`` set to this, and the scan looks as deep.
MAX_DEPTH = 9


@dataclass(frozen=True)
class FolderScan:
    """What a folder tree holds: DICOM files and everything else (both sorted)."""

    root: Path
    dicom: tuple[Path, ...]
    other: tuple[Path, ...]


def is_dicom(path: Path) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble) or a bare DICOM dataset.

    Only regular files are opened: a FIFO or device in the folder would block the read forever.
    """
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # Old files without preamble start with a group 0x0002 or 0x0008 tag, little endian.
    if (
        len(head) >= 8
        and head[0:2] in (b"\x02\x00", b"\x08\x00")
        and head[2:4] in (b"\x00\x00", b"\x05\x00", b"\x08\x00", b"\x10\x00")
    ):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # pydicom raises many types on junk
            return False
        return "SOPClassUID" in ds or "Modality" in ds
    return False


def list_files(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every file under ``root`` (at most ``max_depth`` folders down), sorted; reads no file."""
    files: list[Path] = []
    root = Path(root)
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).parts) - base_depth >= max_depth:
            dirnames[:] = []
        dirnames.sort()
        files.extend(Path(dirpath) / name for name in sorted(filenames))
    return files


def scan_folder(root: Path, max_depth: int = MAX_DEPTH) -> FolderScan:
    """Walk ``root`` (at most ``max_depth`` folders down) and sort files into DICOM and other."""
    dicom: list[Path] = []
    other: list[Path] = []
    for path in list_files(root, max_depth):
        (dicom if is_dicom(path) else other).append(path)
    return FolderScan(Path(root), tuple(dicom), tuple(other))


def describe_files(paths: Iterable[Path], root: Path, limit: int = 10) -> str:
    """Comma-separated paths relative to ``root``, at most ``limit`` of them, then '... and N more'."""
    paths = list(paths)
    shown = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths[:limit]]
    extra = f" ... and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + extra


def slice_spacing_report(
    files: Iterable[Path], root: Path, series_uid: str | None = None, series_number: int | None = None
) -> list[str]:
    """Explain where a series' slice positions are unevenly spaced: missing, duplicate or shifted slices.

    Reads the headers of ``files``, keeps those of the series (by SeriesInstanceUID, else by
    SeriesNumber), orders the slices along the slice normal and names the files on each side of
    every step that differs from the typical spacing by more than 10 %.
    """
    import pydicom

    tags = ["SeriesInstanceUID", "SeriesNumber", "ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber"]
    slices: list[tuple[float, Path]] = []
    normal = None
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except Exception:
            continue
        if series_uid is not None and str(ds.get("SeriesInstanceUID", "")) != series_uid:
            continue
        if series_uid is None and series_number is not None and ds.get("SeriesNumber") != series_number:
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        if normal is None:
            normal = np.cross(iop[:3], iop[3:])
        slices.append((float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal), path))
    if len(slices) < 3:
        return []
    slices.sort()
    positions = np.array([p for p, _ in slices])
    steps = np.diff(positions)
    typical = float(np.median(steps))
    problems: list[str] = []
    for k, step in enumerate(steps):
        if typical > 0 and abs(step - typical) <= 0.1 * typical:
            continue
        a, b = slices[k][1], slices[k + 1][1]
        where = (
            f"between {describe_files([a], root)} ({positions[k]:.2f} mm) and "
            f"{describe_files([b], root)} ({positions[k + 1]:.2f} mm)"
        )
        if step < 0.1 * typical:
            problems.append(f"two slices at the same position {where}")
        elif typical > 0 and abs(step / typical - round(step / typical)) < 0.1:
            missing = int(round(step / typical)) - 1
            problems.append(f"{missing} slice(s) missing {where}: {step:.2f} mm apart, elsewhere {typical:.2f} mm")
        else:
            problems.append(f"uneven slice spacing {where}: {step:.2f} mm apart, elsewhere {typical:.2f} mm")
    return problems


def pixel_data_problem(path: Path) -> str | None:
    """Why ``path``'s image cannot be used (truncated, unreadable, no pixel data), or None when it looks whole.

    Compares the stored pixel data with what Rows x Columns x frames x samples x bits asks for, the
    check dcm2niix makes before it drops a file from a series without naming it.
    """
    import pydicom

    try:
        size = path.stat().st_size
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types on damaged files
        return f"unreadable as DICOM ({type(exc).__name__}: {exc})"
    if "PixelData" not in ds:
        return f"no image: {size} bytes and no pixel data (truncated, or not an image)"
    try:
        pixels = ds.PixelData
    except Exception as exc:
        return f"pixel data cut off ({type(exc).__name__}: {exc})"
    if ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian).is_compressed:
        return None
    expected = (
        int(ds.get("Rows", 0))
        * int(ds.get("Columns", 0))
        * int(ds.get("NumberOfFrames", 1) or 1)
        * int(ds.get("SamplesPerPixel", 1))
        * int(ds.get("BitsAllocated", 16))
        // 8
    )
    if len(pixels) < expected:
        return f"truncated: {size} bytes, {len(pixels)} of {expected} bytes of pixel data"
    return None
