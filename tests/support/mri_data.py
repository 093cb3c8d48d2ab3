"""Test data for the MRI pipeline: real volumes from installed packages, written out as DICOM series.

nilearn ships the MNI ICBM152 2009 T1 template (197x233x189, 1 mm) with grey/white-matter
probability maps; :func:`write_series` (the library's ``hpclab.mri.demo.write_dicom_series``) turns
any (data, affine) into a DICOM series with pydicom (any slice axis, oblique affines, rescale
slope/intercept, RLE compression, dropped or shifted slices) so conversions can be checked against
the source to the last voxel. Nothing here is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from hpclab.mri.demo import write_dicom_series

NILEARN_DATA = Path(__import__("nilearn.datasets", fromlist=["x"]).__file__).parent / "data"
T1_FILE = NILEARN_DATA / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
GM_FILE = NILEARN_DATA / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
WM_FILE = NILEARN_DATA / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
SIEMENS_DTI = [NIBABEL_DATA / "0.dcm", NIBABEL_DATA / "1.dcm"]


def template_t1() -> nib.Nifti1Image:
    """The MNI ICBM152 2009 T1 template as shipped by nilearn (uint8, 0-255, 1 mm)."""
    return nib.load(T1_FILE)


def probability_map(tissue: str) -> np.ndarray:
    """The template's grey ("gm") or white ("wm") matter probability map, scaled to 0-1."""
    path = {"gm": GM_FILE, "wm": WM_FILE}[tissue]
    return np.asarray(nib.load(path).dataobj, dtype=np.float32) / 255.0


def downsample(img: nib.Nifti1Image, factor: int) -> nib.Nifti1Image:
    """Every ``factor``-th voxel along each axis, with the affine to match (no smoothing)."""
    data = np.asarray(img.dataobj)[::factor, ::factor, ::factor]
    affine = img.affine.copy()
    affine[:3, :3] = affine[:3, :3] * factor
    return nib.Nifti1Image(data, affine)


def rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    """A 4x4 rotation about x then z (an oblique acquisition's world rotation)."""
    ax, az = np.deg2rad(degrees_x), np.deg2rad(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ rx
    return out


def bias_field(shape: Sequence[int], strength: float = 0.4) -> np.ndarray:
    """A smooth multiplicative field (1 +- strength) like a receive-coil bias: linear + quadratic."""
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    x, y, z = grids
    field = 0.55 * x + 0.35 * y - 0.25 * z + 0.3 * x * y - 0.2 * z * z
    field = field / np.abs(field).max()
    return (1.0 + strength * field).astype(np.float32)


#: One DICOM file per slice; see :func:`hpclab.mri.demo.write_dicom_series`.
write_series = write_dicom_series


def canonical(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    """(data as float64, affine) in the closest-canonical voxel order, to compare two images of one grid."""
    can = nib.as_closest_canonical(img)
    return np.asarray(can.dataobj, dtype=np.float64), can.affine


def synthetic_head(brain: nib.Nifti1Image, seed: int = 0) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A skull-stripped brain wrapped in CSF, dark skull, bright scalp and noisy air; returns (head, brain mask).

    Layers by distance from the brain surface: 0-3 mm CSF, 3-8 mm skull, 8-14 mm scalp; the grid is
    padded by 20 mm on every side.
    """
    from scipy import ndimage as ndi

    zooms = np.asarray(brain.header.get_zooms()[:3], dtype=float)
    pad = [int(np.ceil(20.0 / z)) for z in zooms]
    data = np.pad(np.asarray(brain.dataobj, dtype=np.float32), [(p, p) for p in pad])
    mask = data > 0
    outside = ndi.distance_transform_edt(~mask, sampling=zooms)
    rng = np.random.default_rng(seed)
    head = data.copy()
    head[(outside > 0) & (outside <= 3)] = 60.0
    head[(outside > 3) & (outside <= 8)] = 15.0
    head[(outside > 8) & (outside <= 14)] = 190.0
    air = outside > 14
    head[air] = np.abs(rng.normal(0.0, 6.0, int(air.sum())))
    head = head + rng.normal(0.0, 2.0, head.shape).astype(np.float32) * (~air)
    affine = brain.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.asarray(pad, dtype=float)
    return nib.Nifti1Image(np.clip(head, 0, None).astype(np.float32), affine), mask
