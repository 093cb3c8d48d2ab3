"""N4 bias-field correction and three-class tissue segmentation (k-means), both with SimpleITK.

The brain mask they work inside comes from :mod:`.brain_extraction`.

No FreeSurfer or FSL needed. Measured on the MNI ICBM152 2009 T1 template against its own GM/WM
probability maps thresholded at 0.5 (see docs/mri.md): k-means on N4-corrected intensities gives
Dice about 0.90 (GM) / 0.93 (WM), and about 0.89 / 0.91 with a +-40 % bias field multiplied in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ProcessingError

#: Tissue labels written by ``process``.
BACKGROUND, CSF, GM, WM = 0, 1, 2, 3


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


def segment_tissue(
    data: np.ndarray, mask: np.ndarray, *, seed: int = 0, sample: int = 200_000, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
