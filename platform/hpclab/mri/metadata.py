"""The experiment-metadata TXT written next to each converted series, and de-identification of sidecars."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: BIDS sidecar keys that identify a person or a visit; dropped when de-identifying
#: (the set dcm2niix's ``-ba y`` drops, plus dates and accession/referrer fields).
IDENTIFYING_KEYS = frozenset(
    {
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "StudyID",
        "AcquisitionDateTime",
        "AcquisitionDate",
        "StudyDate",
        "SeriesDate",
        "ContentDate",
        "AccessionNumber",
        "ReferringPhysicianName",
        "InstitutionAddress",
        "DeviceSerialNumber",
        "StationName",
    }
)

#: Fields of the metadata file, in order (absent ones are left out).
FIELDS = (
    "subject_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "study_uid",
    "series_uid",
    "series_number",
    "series_description",
    "protocol",
    "modality",
    "manufacturer",
    "scanner_model",
    "field_strength_T",
    "institution",
    "sequence_name",
    "scanning_sequence",
    "sequence_variant",
    "acquisition_type",
    "pulse_sequence",
    "repetition_time_ms",
    "echo_time_ms",
    "inversion_time_ms",
    "flip_angle_deg",
    "matrix",
    "voxel_size_mm",
    "orientation",
    "slice_plane",
    "n_slices",
    "n_volumes",
    "volume_tr_s",
    "n_diffusion_directions",
    "acquisition_date",
    "acquisition_time",
    "deidentified",
    "n_dicom_files",
    "source_folder",
    "nifti",
    "sidecar",
    "bval",
    "bvec",
    "equalized_nifti",
    "converter",
    "warnings",
)


def pseudonym(uid: str) -> str:
    """A stable stand-in for a DICOM UID: ``sha256:`` and the first 16 hex digits of its hash."""
    return "sha256:" + hashlib.sha256(uid.encode()).hexdigest()[:16]


def deidentify_sidecar(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar without :data:`IDENTIFYING_KEYS` and ``Patient*`` keys."""
    return {k: v for k, v in sidecar.items() if k not in IDENTIFYING_KEYS and not k.startswith("Patient")}


def slice_plane(iop: Any) -> str:
    """'axial', 'coronal', 'sagittal' from DICOM ImageOrientationPatient, or 'oblique' (> 1 degree off)."""
    try:
        v = np.asarray(iop, dtype=float).reshape(6)
    except (TypeError, ValueError):
        return "unknown"
    normal = np.cross(v[:3], v[3:])
    normal = normal / (np.linalg.norm(normal) or 1.0)
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < np.cos(np.deg2rad(1.0)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def slice_axis(affine: np.ndarray, iop: Any) -> int:
    """The NIfTI voxel axis along the DICOM slice normal (dcm2niix may reorder the axes of 3-D scans)."""
    try:
        v = np.asarray(iop, dtype=float).reshape(6)
    except (TypeError, ValueError):
        return 2
    normal = np.diag([-1.0, -1.0, 1.0]) @ np.cross(v[:3], v[3:])  # LPS -> RAS
    columns = np.asarray(affine, dtype=float)[:3, :3]
    columns = columns / np.linalg.norm(columns, axis=0)
    return int(np.argmax(np.abs(columns.T @ normal)))


def build_metadata(
    sidecar: Mapping[str, Any],
    header: Any,
    *,
    deidentify: bool,
    subject: str | None,
    files: Mapping[str, str | None],
    n_dicom_files: int | None,
    source_folder: str,
    converter: str,
    warnings: list[str],
) -> dict[str, str]:
    """The metadata fields for one series from its dcm2niix sidecar and NIfTI header (strings, in order)."""
    import nibabel as nib

    shape = tuple(int(n) for n in header.get_data_shape())
    zooms = tuple(float(z) for z in header.get_zooms())
    affine = header.get_best_affine()
    out: dict[str, Any] = {}
    if deidentify:
        out["subject_id"] = subject or "anonymous"
        for key, name in (("StudyInstanceUID", "study_uid"), ("SeriesInstanceUID", "series_uid")):
            if sidecar.get(key):
                out[name] = pseudonym(str(sidecar[key]))
    else:
        out["subject_id"] = subject or sidecar.get("PatientID")
        out["patient_name"] = sidecar.get("PatientName")
        out["patient_birth_date"] = sidecar.get("PatientBirthDate")
        out["patient_sex"] = sidecar.get("PatientSex")
        out["study_uid"] = sidecar.get("StudyInstanceUID")
        out["series_uid"] = sidecar.get("SeriesInstanceUID")
    out["series_number"] = sidecar.get("SeriesNumber")
    out["series_description"] = sidecar.get("SeriesDescription")
    out["protocol"] = sidecar.get("ProtocolName")
    out["modality"] = sidecar.get("Modality")
    out["manufacturer"] = sidecar.get("Manufacturer")
    out["scanner_model"] = sidecar.get("ManufacturersModelName")
    out["field_strength_T"] = sidecar.get("MagneticFieldStrength")
    out["institution"] = sidecar.get("InstitutionName")
    out["sequence_name"] = sidecar.get("SequenceName")
    out["scanning_sequence"] = sidecar.get("ScanningSequence")
    out["sequence_variant"] = sidecar.get("SequenceVariant")
    out["acquisition_type"] = sidecar.get("MRAcquisitionType")
    out["pulse_sequence"] = sidecar.get("PulseSequenceType")
    for key, name in (
        ("RepetitionTime", "repetition_time_ms"),
        ("EchoTime", "echo_time_ms"),
        ("InversionTime", "inversion_time_ms"),
    ):
        if isinstance(sidecar.get(key), (int, float)):
            out[name] = _num(sidecar[key] * 1000.0)
    out["flip_angle_deg"] = sidecar.get("FlipAngle")
    out["matrix"] = " x ".join(str(n) for n in shape[:3])
    out["voxel_size_mm"] = " x ".join(_num(z) for z in zooms[:3])
    out["orientation"] = "".join(nib.aff2axcodes(affine))
    out["slice_plane"] = slice_plane(sidecar.get("ImageOrientationPatientDICOM"))
    out["n_slices"] = shape[slice_axis(affine, sidecar.get("ImageOrientationPatientDICOM"))] if len(shape) > 2 else 1
    out["n_volumes"] = shape[3] if len(shape) > 3 else 1
    if len(shape) > 3 and len(zooms) > 3:
        out["volume_tr_s"] = _num(zooms[3])
    if files.get("bval"):
        out["n_diffusion_directions"] = out["n_volumes"]
    if not deidentify:
        stamp = str(sidecar.get("AcquisitionDateTime", ""))
        if "T" in stamp:
            out["acquisition_date"], out["acquisition_time"] = stamp.split("T", 1)
        elif sidecar.get("AcquisitionTime"):
            out["acquisition_time"] = sidecar["AcquisitionTime"]
    out["deidentified"] = "yes" if deidentify else "no"
    out["n_dicom_files"] = n_dicom_files
    out["source_folder"] = source_folder
    out["nifti"] = files.get("nifti")
    out["sidecar"] = files.get("sidecar")
    out["bval"] = files.get("bval")
    out["bvec"] = files.get("bvec")
    out["equalized_nifti"] = files.get("equalized")
    out["converter"] = converter
    out["warnings"] = " | ".join(warnings) if warnings else "none"
    return {k: _text(out[k]) for k in FIELDS if out.get(k) not in (None, "")}


def format_metadata(fields: Mapping[str, str]) -> str:
    """``key: value`` lines with a title comment: easy to read for people and for ``read_metadata``."""
    width = max((len(k) for k in fields), default=0)
    lines = ["# HPCLab MRI series metadata (hpclab.mri.convert)"]
    lines += [f"{k.ljust(width)} : {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def read_metadata(path: str | Path) -> dict[str, str]:
    """Read a metadata TXT written by :func:`hpclab.mri.convert` back into a dict of strings."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(" : ", 1) if " : " in line else line.split(":", 1)
        out[key.strip()] = value.strip()
    return out


def _num(value: float) -> str:
    return f"{value:.6g}"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value).replace("\n", " ")
