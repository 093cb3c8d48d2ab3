"""Measures that tell a brain mask on a head from a mask on something else (a phantom, scrambled pixels).

deepbet returns a brain-sized mask whatever it is given, so the mask's volume alone cannot tell. These
measures look at the mask in its image: is it one piece, does the image change across its boundary, does
a head surround it, does the field of view cut it. The thresholds that turn them into checks are in
:mod:`.qc`; docs/mri.md says where each came from. All but the field of view are measured on a grid of
1.5-3 mm voxels (every n-th voxel), so they cost a fraction of a second even on a 0.5 mm volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The coarse grid's voxels: each axis merges floor(COARSE_MM / voxel size) voxels (at least 1).
COARSE_MM = 3.0
#: Shells on either side of the mask's boundary whose intensities are compared (mm).
SHELL_MM = 6.0
#: The head is the filled foreground brighter than this fraction of the brain's median intensity.
HEAD_LEVEL = 0.1


@dataclass(frozen=True)
class Coarse:
    """A volume and its mask on a coarser grid (``zooms`` in mm)."""

    data: np.ndarray
    mask: np.ndarray
    zooms: np.ndarray


def coarse(data: np.ndarray, mask: np.ndarray, zooms: Sequence[float], target_mm: float = COARSE_MM) -> Coarse:
    """Every n-th voxel of ``data`` and ``mask`` per axis, n = floor(``target_mm`` / voxel size) (at least 1).

    Sampling, not averaging: it reads only the voxels it keeps (a 0.5 mm head costs milliseconds).
    """
    sizes = np.asarray([float(z) for z in zooms[:3]])
    factors = [max(1, int(target_mm // z)) for z in sizes]
    picked = tuple(slice(f // 2, None, f) for f in factors)
    return Coarse(np.asarray(data[picked], dtype=np.float32), np.asarray(mask[picked], dtype=bool), sizes * factors)


def piece_volumes_ml(mask: np.ndarray, zooms: Sequence[float] | np.ndarray) -> np.ndarray:
    """Volumes (mL) of the mask's 26-connected pieces, largest first."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros(0)
    counts = np.bincount(labels.ravel())[1:]
    return np.sort(counts)[::-1] * float(np.prod(zooms)) / 1000.0


def boundary_contrast(grid: Coarse) -> float:
    """Kolmogorov-Smirnov distance between the intensities just inside and just outside the mask (0..1).

    The shells are ``SHELL_MM`` thick. A brain's edge (grey matter inside; CSF, skull and scalp outside)
    gives two different distributions; a mask laid on uniform material or on noise gives two alike.
    """
    from scipy import ndimage as ndi

    inside = ndi.distance_transform_edt(grid.mask, sampling=grid.zooms)
    outside = ndi.distance_transform_edt(~grid.mask, sampling=grid.zooms)
    inner = np.sort(grid.data[(inside > 0) & (inside <= SHELL_MM)])
    outer = np.sort(grid.data[(outside > 0) & (outside <= SHELL_MM)])
    if inner.size == 0 or outer.size == 0:
        return 0.0
    values = np.concatenate([inner, outer])
    cdf_in = np.searchsorted(inner, values, side="right") / inner.size
    cdf_out = np.searchsorted(outer, values, side="right") / outer.size
    return float(np.abs(cdf_in - cdf_out).max())


def head(grid: Coarse) -> np.ndarray:
    """The head on the coarse grid: the largest piece brighter than ``HEAD_LEVEL`` x the brain's median, filled."""
    from scipy import ndimage as ndi

    level = HEAD_LEVEL * float(np.median(grid.data[grid.mask])) if grid.mask.any() else 0.0
    bright = grid.data > level
    labels, n = ndi.label(bright)
    if n > 1:
        bright = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return ndi.binary_fill_holes(bright)


@dataclass(frozen=True)
class HeadGeometry:
    """How the mask sits in the head: its share of the head's volume and how much of it lies in the head."""

    mask_to_head: float
    inside_head: float


def head_geometry(grid: Coarse) -> HeadGeometry:
    """Mask volume / head volume, and the share of the mask inside the head (on the coarse grid)."""
    found = head(grid)
    n_mask = int(np.count_nonzero(grid.mask))
    if n_mask == 0:
        return HeadGeometry(0.0, 0.0)
    return HeadGeometry(n_mask / max(int(np.count_nonzero(found)), 1), float(np.count_nonzero(found & grid.mask)) / n_mask)


#: Face names by the world axis (RAS) and side the face's outward direction points to.
_FACE_NAMES = {
    (0, 1): "right",
    (0, -1): "left",
    (1, 1): "anterior",
    (1, -1): "posterior",
    (2, 1): "superior",
    (2, -1): "inferior",
}


@dataclass(frozen=True)
class FaceContact:
    """Where the mask meets one of the volume's six faces: the face's name and the contact's width (mm)."""

    face: str
    band_mm: float


def face_name(axis: int, side: int, affine: np.ndarray | None) -> str:
    """'superior', 'left', ... for the face at the ``side`` (-1 first slice, +1 last) of voxel ``axis``."""
    if affine is None:
        return f"{'first' if side < 0 else 'last'} slice of axis {axis}"
    direction = np.asarray(affine, dtype=float)[:3, axis] * side
    world = int(np.argmax(np.abs(direction)))
    return _FACE_NAMES[(world, 1 if direction[world] > 0 else -1)]


def face_contacts(mask: np.ndarray, zooms: Sequence[float], affine: np.ndarray | None = None) -> list[FaceContact]:
    """The faces the mask touches, each with the width of the band of slices over which it touches, widest first.

    The band is the larger in-plane extent (mm) of the mask's voxels on that face: a field of view that
    ends in the brainstem or grazes the vertex gives a band of a few centimetres, one that cuts through
    the cerebrum or cerebellum a band of most of the brain's width.
    """
    sizes = [float(z) for z in zooms[:3]]
    contacts = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for side, index in ((-1, 0), (1, -1)):
            face = mask[(slice(None),) * axis + (index,)]
            if not face.any():
                continue
            spans = [np.flatnonzero(face.any(axis=1 - k)) for k in range(2)]
            band = max((span[-1] - span[0] + 1) * sizes[others[k]] for k, span in enumerate(spans))
            contacts.append(FaceContact(face_name(axis, side, affine), float(band)))
    return sorted(contacts, key=lambda c: -c.band_mm)
