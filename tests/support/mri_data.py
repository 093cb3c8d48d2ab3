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
DATA_DIR = Path(__file__).resolve().parents[1] / "science" / "mri" / "data"
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


#: Real whole-head T1s from public repositories, downsampled to 2.5 mm (tests/science/mri/data/SOURCES.md)
REAL_HEADS = {
    "uih": DATA_DIR / "uih_t1_132750_2p5mm.nii.gz",     # UIH uMR 770 3T, 3-D GRE (BSD-2-Clause)
    "xa30": DATA_DIR / "xa30_t1_5_2p5mm.nii.gz",        # Siemens Prisma XA30 MPRAGE (BSD-2-Clause)
    "chris": DATA_DIR / "chris_t1_2p5mm.nii.gz",        # an adult head, 0.88 mm originally (CC BY-NC 4.0)
}
#: FSL's whole-head MNI152 2 mm template and its published brain mask
MNI152_HEAD = DATA_DIR / "MNI152_T1_2mm_uint8.nii.gz"
MNI152_BRAIN_MASK = DATA_DIR / "MNI152_T1_2mm_brain_mask.nii.gz"
