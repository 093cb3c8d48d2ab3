"""Brain mask, N4 bias-field correction and three-class tissue segmentation (k-means), both with SimpleITK.

No FreeSurfer or FSL needed. Measured on the MNI ICBM152 2009 T1 template against its own GM/WM
probability maps thresholded at 0.5 (see docs/mri.md): k-means on N4-corrected intensities gives
Dice about 0.90 (GM) / 0.93 (WM), and about 0.89 / 0.91 with a +-40 % bias field multiplied in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .errors import ProcessingError

#: Tissue labels written by ``process``.
BACKGROUND, CSF, GM, WM = 0, 1, 2, 3


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximises the between-class variance of a histogram)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("otsu_threshold of an empty array")
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def is_skull_stripped(data: np.ndarray, fraction: float = 0.25) -> bool:
    """True when at least ``fraction`` of the voxels sit exactly at the minimum (masked/skull-stripped input)."""
    return bool(np.count_nonzero(data == data.min()) >= fraction * data.size)


def brain_mask(data: np.ndarray, zooms: Sequence[float], *, skull_strip: bool | None = None,
               erode_mm: float = 3.0, close_mm: float = 10.0) -> np.ndarray:
    """Boolean brain mask of a T1 volume.

    Skull-stripped input (``skull_strip=False``; auto-detected by :func:`is_skull_stripped`): the
    non-background voxels with holes filled. Whole heads: Otsu head mask; the tissue above a second
    Otsu threshold is eroded by ``erode_mm`` to cut the brain from the scalp, the largest piece is
    grown back and closed by ``close_mm`` to take in sulci. A heuristic, not BET: check the mask view.
    """
    data = np.asarray(data, dtype=np.float32)
    if skull_strip is None:
        skull_strip = not is_skull_stripped(data)
    if not skull_strip:
        head = data > data.min()
        if not head.any():
            raise ProcessingError("the volume is constant: no brain to mask")
        return ndi.binary_fill_holes(_largest_component(head))
    zooms = tuple(float(z) for z in zooms[:3])
    smooth = ndi.gaussian_filter(data, 1.0)
    head = smooth > otsu_threshold(smooth)
    head = ndi.binary_fill_holes(_largest_component(head))
    if not head.any():
        raise ProcessingError("no head found: the image has no foreground above Otsu's threshold")
    tissue = head & (smooth > otsu_threshold(smooth[head]))
    core = ndi.distance_transform_edt(tissue, sampling=zooms) > erode_mm  # erosion (exact ball, in mm)
    if not core.any():
        raise ProcessingError(f"the brain vanished after a {erode_mm} mm erosion: voxels too large or image too small")
    core = _largest_component(core)
    grown = ndi.distance_transform_edt(~core, sampling=zooms) <= erode_mm + close_mm  # dilation
    closed = ndi.distance_transform_edt(grown, sampling=zooms) > close_mm  # erosion back: a closing
    return ndi.binary_fill_holes(closed & head)


def bias_correct(
    data: np.ndarray,
    mask: np.ndarray,
    zooms: Sequence[float],
    *,
    shrink: int = 4,
    iterations: Sequence[int] = (50, 50),
    control_points: int = 4,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """N4 bias-field correction (SimpleITK) fitted inside ``mask``; returns (corrected, field).

    The field is estimated on a ``shrink``-times smaller grid with ``len(iterations)`` B-spline
    fitting levels (two levels of 4 control points: a smooth field that leaves anatomy alone) and
    evaluated at full resolution; corrected = data / field.
    """
    import SimpleITK as sitk

    data = np.asarray(data, dtype=np.float32)
    if not mask.any():
        raise ProcessingError("empty brain mask: nothing to fit the bias field on")
    positive = data - min(0.0, float(data[mask].min())) + 1e-3  # N4 works on log intensities
    image = sitk.GetImageFromArray(np.ascontiguousarray(positive.transpose(2, 1, 0)))
    image.SetSpacing([float(z) for z in zooms[:3]])
    mimage = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8))
    mimage.CopyInformation(image)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetNumberOfControlPoints([control_points] * 3)
    default_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if threads:  # also caps the shrink and the full-resolution field evaluation, which use the default
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
        n4.SetNumberOfThreads(int(threads))
    try:
        n4.Execute(sitk.Shrink(image, [shrink] * 3), sitk.Shrink(mimage, [shrink] * 3))
        log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).transpose(2, 1, 0)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default_threads)
    field = np.exp(log_field).astype(np.float32)
    return (data / field).astype(np.float32), field


def segment_tissue(data: np.ndarray, mask: np.ndarray, *, seed: int = 0, sample: int = 200_000,
                   threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Three-class CSF/GM/WM labels (1/2/3, 0 outside ``mask``) of a T1 volume; returns (labels, class means).

    k-means (ITK's scalar k-means through SimpleITK, already loaded for N4) on up to ``sample``
    random brain voxels, started from the 10th, 50th and 90th percentiles; each voxel takes the
    class of the nearest mean (thresholds half-way between means). On T1, CSF < GM < WM.
    """
    import SimpleITK as sitk

    values = np.asarray(data, dtype=np.float32)[mask]
    if values.size < 3:
        raise ProcessingError(f"the brain mask holds {values.size} voxels: too few to segment")
    rng = np.random.default_rng(seed)
    pick = values if values.size <= sample else rng.choice(values, sample, replace=False)
    kmeans = sitk.ScalarImageKmeansImageFilter()
    kmeans.SetClassWithInitialMean([float(v) for v in np.percentile(pick, (10, 50, 90))])
    if threads:
        kmeans.SetNumberOfThreads(int(threads))
    kmeans.Execute(sitk.GetImageFromArray(np.ascontiguousarray(pick, dtype=np.float32).reshape(1, -1)))
    means = np.sort(np.asarray(kmeans.GetFinalMeans(), dtype=np.float64))
    if not (means[0] < means[1] < means[2]):
        raise ProcessingError(f"k-means found fewer than three distinct tissue intensities (means {means.tolist()})")
    lo, hi = (means[0] + means[1]) / 2, (means[1] + means[2]) / 2
    labels = np.zeros(mask.shape, dtype=np.uint8)
    labels[mask] = np.where(values >= hi, WM, np.where(values >= lo, GM, CSF))
    return labels, means


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A and B| / (|A| + |B|) of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
