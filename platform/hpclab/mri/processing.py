"""One T1 volume -> brain mask, N4-corrected image, CSF/GM/WM labels and their segstats table, on disk.

Output names are fixed so other tools can find them: ``<stem>_brainmask.nii.gz``,
``<stem>_n4.nii.gz``, ``<stem>_tissue.nii.gz`` (0 background, 1 CSF, 2 GM, 3 WM, on the input's
grid), ``<stem>_segstats.txt`` and, when asked, the views ``<stem>_ortho.png`` and
``<stem>_montage.png``, where ``<stem>`` is the input name without ``.nii``/``.nii.gz``. They are
one set: written into a hidden staging folder and renamed into place together
(:func:`hpclab.safe_output.output_set`), so an interrupted run leaves the previous set whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..safe_output import OutputError, check_output_dir, output_set
from .conversion import nifti_stem
from .errors import ProcessingError
from .lut import TISSUE_LUT
from .qc import QCReport, quality_checks
from .stats import SegStats, segstats

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure

OUTPUT_SUFFIXES = {
    "brainmask": "_brainmask.nii.gz",
    "n4": "_n4.nii.gz",
    "tissue": "_tissue.nii.gz",
    "segstats": "_segstats.txt",
}
VIEW_SUFFIXES = {"ortho": "_ortho.png", "montage": "_montage.png"}


def output_paths(nifti: str | Path, out_dir: str | Path, *, views: bool = False) -> dict[str, Path]:
    """Where :func:`process` writes its outputs for ``nifti`` (role -> path), the PNG views too if ``views``."""
    stem = nifti_stem(nifti)
    suffixes = {**OUTPUT_SUFFIXES, **(VIEW_SUFFIXES if views else {})}
    return {role: Path(out_dir) / f"{stem}{suffix}" for role, suffix in suffixes.items()}


@dataclass(frozen=True)
class ProcessResult:
    """What :func:`process` made: output files, the statistics table, class means and step timings."""

    input: Path
    outputs: dict[str, Path]
    stats: SegStats
    class_means: tuple[float, float, float]
    skull_stripped_here: bool
    seconds: dict[str, float] = field(default_factory=dict)
    qc: QCReport = field(default_factory=lambda: QCReport(()))

    @property
    def volumes_ml(self) -> dict[str, float]:
        """CSF, GM and WM volumes in millilitres."""
        return {row.StructName: row.Volume_mm3 / 1000.0 for row in self.stats.table.itertuples()}

    def plot(self, fig: matplotlib.figure.Figure | None = None) -> matplotlib.figure.Figure:
        """Orthogonal slices of the corrected image with the tissue labels overlaid; returns the figure."""
        from .views import plot_ortho

        return plot_ortho(self.outputs["n4"], self.outputs["tissue"], fig=fig)


def process(
    nifti: str | Path,
    out_dir: str | Path,
    *,
    skull_strip: bool | None = None,
    correct_bias: bool = True,
    shrink: int = 4,
    threads: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    interpolated_slices: bool = False,
    views: bool = False,
) -> ProcessResult:
    """Mask, bias-correct and segment the T1 volume ``nifti``; write the outputs to ``out_dir``.

    ``skull_strip=None`` decides from the image (:func:`.brain_extraction.is_skull_stripped`): whole
    heads are masked by deepbet, stripped input keeps its foreground. ``threads`` caps deepbet's,
    N4's and k-means' threads (a cohort runs one per job). ``views`` adds the ortho and montage PNGs.
    Refuses to replace existing outputs unless ``overwrite``; then the whole set is replaced at once,
    and views of an earlier run that this one does not write are removed. Quality checks (:mod:`.qc`)
    land in ``result.qc`` and in the segstats header; ``interpolated_slices`` flags input with filled-in slices.
    """
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    src = Path(nifti)
    dst = Path(out_dir)
    if not src.exists():
        raise FileNotFoundError(f"input volume {src} does not exist")
    paths = output_paths(src, dst, views=views)
    whole_set = [p.name for p in output_paths(src, dst, views=True).values()]
    existing = [dst / name for name in whole_set if (dst / name).exists()]
    if existing and not overwrite:
        raise ProcessingError(
            f"{dst} already holds {', '.join(p.name for p in existing)}; nothing was changed. "
            "Use another folder or overwrite=True (CLI: --overwrite)."
        )
    try:
        check_output_dir(dst)  # before reading a voxel, not after the computing
    except OutputError as exc:
        raise ProcessingError(str(exc)) from None
    try:
        img = nib.load(src)
    except Exception as exc:
        raise ProcessingError(f"cannot read {src} as NIfTI: {exc}") from None
    if not isinstance(img, SpatialImage):  # e.g. a GIFTI surface: no voxels
        raise ProcessingError(f"{src} is a {type(img).__name__}, not a volume image")
    shape = tuple(img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:  # before reading the data: a 4-D series can be many GB
        raise ProcessingError(f"{src} has shape {shape}: process needs one 3-D anatomical (T1) volume")
    check_memory(src, shape)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # a file cut short: nibabel raises OSError, EOFError, zlib.error ...
        raise ProcessingError(f"cannot read the voxels of {src}: {type(exc).__name__}: {exc}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if not np.isfinite(data).all():
        raise ProcessingError(f"{src} holds NaN or infinite values")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])

    from .brain_extraction import brain_mask  # scipy and torch: after the checks
    from .tissue import bias_correct, segment_tissue

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    mask, strip = brain_mask(data, img.affine, zooms, skull_strip=skull_strip, threads=threads)
    seconds["brainmask"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if correct_bias:
        corrected, _ = bias_correct(data, mask, zooms, shrink=shrink, threads=threads)
    else:
        corrected = data
    seconds["n4"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels, means = segment_tissue(corrected, mask, seed=seed, threads=threads)
    seconds["segment"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    qc = quality_checks(
        corrected, mask, labels, zooms, interpolated_slices=interpolated_slices, affine=img.affine, image=data, whole_head=strip
    )
    stats = segstats(nib.Nifti1Image(labels, img.affine, _header(img, np.uint8)), corrected, TISSUE_LUT, voxel_size=zooms)
    brain_mm3 = float(np.count_nonzero(mask)) * float(np.prod(zooms))
    notes = (
        f"Measure BrainMask, BrainMaskVol, Brain mask volume, {brain_mm3:.6f}, mm^3",
        *(f"QC {c.name} {c.status} {c.value:.6g} {c.message}" for c in qc.checks),
        f"QC status {qc.status}",
    )
    stats = SegStats(
        table=stats.table,
        voxel_volume=stats.voxel_volume,
        intensity_name=stats.intensity_name,
        intensity_units=stats.intensity_units,
        sources={"SegVolFile": str(paths["tissue"]), "InVolFile": str(paths["n4"])},
        excluded=stats.excluded,
        non_empty_only=stats.non_empty_only,
        notes=notes,
    )
    try:
        with output_set(dst, whole_set) as staging:  # every file is renamed into dst at the end, or none is
            staged = {role: staging / path.name for role, path in paths.items()}
            _save(mask.astype(np.uint8), img, staged["brainmask"])
            _save(corrected, img, staged["n4"])
            _save(labels, img, staged["tissue"])
            # the header's time stamps are the staged files' (a rename keeps them), the names the final ones
            staged_stats = replace(stats, sources={"SegVolFile": str(staged["tissue"]), "InVolFile": str(staged["n4"])})
            staged["segstats"].write_text(staged_stats.to_text().replace(str(staging), str(dst)))
            if views:
                _save_views(staged)
    except OutputError as exc:
        raise ProcessingError(str(exc)) from None
    seconds["write"] = time.perf_counter() - t0
    return ProcessResult(
        input=src,
        outputs=paths,
        stats=stats,
        class_means=(float(means[0]), float(means[1]), float(means[2])),
        skull_stripped_here=strip,
        seconds=seconds,
        qc=qc,
    )


def _save_views(files: dict[str, Path]) -> None:
    """Write the ortho and montage PNGs of the corrected image and labels in ``files``."""
    from .views import plot_montage, plot_ortho, save_figure

    save_figure(plot_ortho(files["n4"], files["tissue"], mask=files["brainmask"]), files["ortho"])
    save_figure(plot_montage(files["n4"], files["tissue"]), files["montage"])


#: float32 copies of the volume alive at once while processing (data, smoothed, corrected, field,
#: labels, masks, deepbet's canonical copy), and deepbet's fixed working set (256³ tensors)
_WORKING_COPIES = 10
_DEEPBET_BYTES = 600 * 2**20


def check_memory(src: Path, shape: tuple[int, ...]) -> None:
    """Refuse a volume whose processing cannot fit in the memory this process may use."""
    from ..formatting import format_bytes
    from ..session import available_memory

    need = int(np.prod(shape)) * 4 * _WORKING_COPIES + _DEEPBET_BYTES
    have = available_memory()
    if have is not None and need > have:
        raise ProcessingError(
            f"{src} ({' x '.join(map(str, shape))} voxels) needs about {format_bytes(need)} of "
            f"memory to process; {format_bytes(have)} is available: ask for a job with more memory"
        )


def _header(img: Any, dtype: Any) -> Any:
    """A NIfTI-1 header for ``img``'s grid holding ``dtype`` data without scaling."""
    import nibabel as nib

    header = img.header.copy() if isinstance(img, nib.Nifti1Image) else nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    return header


def _save(array: np.ndarray, like: Any, path: Path) -> None:
    """Save ``array`` on ``like``'s grid (same affine and qform/sform codes) with its own dtype."""
    import nibabel as nib

    out = nib.Nifti1Image(array, like.affine, _header(like, array.dtype))
    if isinstance(like, nib.Nifti1Image):
        out.set_qform(like.get_qform(), int(like.header["qform_code"]))
        out.set_sform(like.get_sform(), int(like.header["sform_code"]))
    nib.save(out, path)
