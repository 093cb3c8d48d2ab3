"""Demo data: the MNI ICBM152 T1 template shipped by nilearn, written out as a DICOM series (pydicom).

For trying the pipeline (and testing it) without patient data: :func:`write_dicom_series` turns any
(data, affine) into one DICOM file per slice, along any axis, oblique or not, with rescale
slope/intercept, RLE compression, and dropped or shifted slices on request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def mni_template(downsample: int = 1) -> Any:
    """nilearn's MNI ICBM152 2009 T1 template (197x233x189, 1 mm, uint8); every ``downsample``-th voxel."""
    import nibabel as nib
    from nilearn import datasets

    img = nib.Nifti1Image.from_filename(
        Path(datasets.__file__).parent / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    )
    if downsample == 1:
        return img
    data = np.asarray(img.dataobj)[::downsample, ::downsample, ::downsample]
    affine = img.affine.copy()
    affine[:3, :3] *= downsample
    return nib.Nifti1Image(data, affine)


def write_dicom_series(
    data: np.ndarray,
    affine: np.ndarray,
    out_dir: str | Path,
    *,
    slice_axis: int = 2,
    series_number: int = 1,
    description: str = "T1w_MPRAGE",
    slope: float = 1.0,
    intercept: float = 0.0,
    compress: bool = False,
    drop_slices: Iterable[int] = (),
    shift_from_slice: int | None = None,
    shift_mm: float = 0.0,
    patient_id: str = "SUBJ-0042",
    patient_name: str = "Doe^Jane",
    study_uid: str | None = None,
    prefix: str = "IM",
    tr_ms: float = 2300.0,
    te_ms: float = 2.98,
    flip_deg: float = 9.0,
) -> list[Path]:
    """Write ``data`` (3-D, voxel -> RAS by ``affine``) as one DICOM MR file per slice along ``slice_axis``.

    Stored values are ``round((data - intercept) / slope)`` as uint16. ``drop_slices`` leaves slices
    out (a missing slice); ``shift_from_slice``/``shift_mm`` moves every slice from that index on
    along the slice normal (inconsistent spacing). Returns the files written.
    """
    from pydicom.uid import RLELossless, generate_uid

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    a, b = [ax for ax in range(3) if ax != slice_axis]
    vol = np.moveaxis(np.asarray(data), (a, b, slice_axis), (0, 1, 2))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)
    col_vec, row_vec, slice_vec = lps[:3, a], lps[:3, b], lps[:3, slice_axis]
    col_spacing, row_spacing = float(np.linalg.norm(col_vec)), float(np.linalg.norm(row_vec))
    thickness = float(np.linalg.norm(slice_vec))
    row_cos, col_cos = col_vec / col_spacing, row_vec / row_spacing
    normal = np.cross(row_cos, col_cos)
    stored_all = np.rint((vol.astype(np.float64) - intercept) / slope)
    if stored_all.min() < 0 or stored_all.max() > 65535:
        raise ValueError("values do not fit uint16 with this slope/intercept")
    stored_all = stored_all.astype(np.uint16)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    when = dt.datetime(2022, 10, 24, 9, 30, 0)
    dropped = set(drop_slices)
    written: list[Path] = []
    for k in range(vol.shape[2]):
        if k in dropped:
            continue
        position = lps[:3, 3] + k * slice_vec
        if shift_from_slice is not None and k >= shift_from_slice:
            position = position + shift_mm * slice_vec / thickness
        pixels = np.ascontiguousarray(stored_all[:, :, k].T)
        ds = _slice_dataset(
            pixels,
            study_uid,
            series_uid,
            frame_uid,
            when,
            patient_id=patient_id,
            patient_name=patient_name,
            series_number=series_number,
            description=description,
            instance=k + 1,
            position=position,
            orientation=np.concatenate([row_cos, col_cos]),
            spacing=(row_spacing, col_spacing),
            thickness=thickness,
            slice_location=float(position @ normal),
            slope=slope,
            intercept=intercept,
            tr_ms=tr_ms,
            te_ms=te_ms,
            flip_deg=flip_deg,
        )
        if compress:
            ds.compress(RLELossless, pixels)
        path = out_dir / f"{prefix}{series_number:02d}_{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def _slice_dataset(
    pixels: np.ndarray,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    when: dt.datetime,
    *,
    patient_id: str,
    patient_name: str,
    series_number: int,
    description: str,
    instance: int,
    position: np.ndarray,
    orientation: np.ndarray,
    spacing: tuple[float, float],
    thickness: float,
    slice_location: float,
    slope: float,
    intercept: float,
    tr_ms: float,
    te_ms: float,
    flip_deg: float,
) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "19800101", "F"
    ds.StudyID = "1"
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", when.strftime("%Y%m%d"))
        setattr(ds, f"{prefix}Time", when.strftime("%H%M%S.000000"))
    ds.Modality = "MR"
    ds.Manufacturer = "HPCLab"
    ds.ManufacturerModelName = "Synthetic3T"
    ds.InstitutionName = "HPCLab test site"
    ds.MagneticFieldStrength = 3
    ds.SeriesDescription = ds.ProtocolName = description
    ds.SequenceName = "tfl3d1"
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "GR\\IR", "SP\\MP", "3D"
    ds.RepetitionTime, ds.EchoTime, ds.InversionTime, ds.FlipAngle = tr_ms, te_ms, 900.0, flip_deg
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = series_number, instance, 1
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [f"{v:.6f}" for v in spacing]
    ds.SliceThickness = f"{thickness:.6f}"
    ds.SpacingBetweenSlices = f"{thickness:.6f}"
    ds.SliceLocation = f"{slice_location:.6f}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "US"
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds
