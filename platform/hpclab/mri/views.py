"""Pictures of volumes and segmentations: orthogonal slices, a slice montage, a volume bar chart.

Every function returns a matplotlib ``Figure`` (or ``Axes``) built without pyplot, so it works in
worker processes and tests without a display; inside IPython/Jupyter the figure's PNG formatter is
registered, so a figure returned by a cell shows inline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .lut import TISSUE_LUT, LutEntry, load_lut

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.axes
    import matplotlib.figure
    import pandas


def _notebook_display() -> None:
    """Inside IPython, show returned ``Figure`` objects as PNG (what ``%matplotlib inline`` does)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure

    formatter = shell.display_formatter.formatters["image/png"]
    if Figure not in formatter.type_printers:
        formatter.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))


def _canonical(img: Any) -> tuple[np.ndarray, tuple[float, float, float]]:
    import nibabel as nib

    if isinstance(img, (str, Path)):
        img = nib.load(img)
    can = nib.as_closest_canonical(img)
    data = np.asarray(can.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    zx, zy, zz = (float(z) for z in can.header.get_zooms()[:3])
    return data, (zx, zy, zz)


def _label_cmap(lut: Mapping[int, LutEntry], max_label: int) -> tuple[Any, Any]:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    colours = np.zeros((max_label + 1, 4))
    rng = np.random.default_rng(0)
    for label in range(1, max_label + 1):
        if label in lut:
            r, g, b, _ = lut[label].rgba
            colours[label] = (r / 255, g / 255, b / 255, 1.0)
        else:
            colours[label] = (*rng.uniform(0.2, 1.0, 3), 1.0)
    return ListedColormap(colours), BoundaryNorm(np.arange(-0.5, max_label + 1.5), max_label + 1)


def _window(data: np.ndarray) -> tuple[float, float]:
    nonzero = data[data > data.min()] if np.any(data > data.min()) else data
    lo, hi = np.percentile(nonzero, [1, 99.5])
    return float(lo), float(hi)


def _slice(data: np.ndarray, axis: int, index: int) -> np.ndarray:
    picked: list[slice | int] = [slice(None)] * data.ndim
    picked[axis] = index
    return data[tuple(picked)].T  # a view; rows = the later axis, shown with origin="lower"


def _aspect(zooms: tuple[float, float, float], axis: int) -> float:
    horizontal, vertical = [z for k, z in enumerate(zooms) if k != axis]
    return vertical / horizontal


def plot_ortho(
    image: Any,
    labels: Any | None = None,
    *,
    lut: str | Path | Mapping[int, Any] | None = None,
    coords: tuple[int, int, int] | None = None,
    alpha: float = 0.4,
    mask: Any | None = None,
    fig: matplotlib.figure.Figure | None = None,
) -> matplotlib.figure.Figure:
    """Sagittal, coronal and axial slices of ``image`` (path or nibabel image), ``labels`` overlaid.

    Slices cross at ``coords`` (voxel indices in RAS order), by default the centre of the labels
    (or of the image). Colours come from ``lut`` (default: the tissue table). ``mask`` (a brain
    mask) is drawn as a yellow outline, so a mask that took in scalp or lost cortex shows at a
    glance. Each slice is marked with the patient's sides (L/R, A/P, S/I) from the image's affine.
    """
    from matplotlib.figure import Figure

    _notebook_display()
    data, zooms = _canonical(image)
    seg = None
    if labels is not None:
        seg, _ = _canonical(labels)
        if seg.shape != data.shape:
            raise ValueError(f"labels shape {seg.shape} differs from image shape {data.shape}")
        seg = np.rint(seg).astype(np.int32)
    outline = None
    if mask is not None:
        outline, _ = _canonical(mask)
        if outline.shape != data.shape:
            raise ValueError(f"mask shape {outline.shape} differs from image shape {data.shape}")
        outline = outline > 0
    if coords is None:
        where = np.argwhere(seg > 0) if seg is not None and seg.any() else None
        centre = where.mean(0) if where is not None else np.array(data.shape) / 2
        coords = (int(centre[0]), int(centre[1]), int(centre[2]))
    fig = fig or Figure(figsize=(12, 4.4))
    axes = fig.subplots(1, 3)
    lo, hi = _window(data)
    table = load_lut(lut) if lut is not None else TISSUE_LUT
    for ax, axis, title in zip(axes, (0, 1, 2), ("sagittal", "coronal", "axial"), strict=True):
        ax.imshow(
            _slice(data, axis, coords[axis]),
            cmap="gray",
            vmin=lo,
            vmax=hi,
            origin="lower",
            aspect=_aspect(zooms, axis),
            interpolation="nearest",
        )
        if seg is not None:
            cmap, norm = _label_cmap(table, int(seg.max()))
            overlay = np.ma.masked_equal(_slice(seg, axis, coords[axis]), 0)
            ax.imshow(
                overlay, cmap=cmap, norm=norm, alpha=alpha, origin="lower", aspect=_aspect(zooms, axis), interpolation="nearest"
            )
        if outline is not None:
            cut = _slice(outline, axis, coords[axis]).astype(np.float32)
            if cut.any():
                ax.contour(cut, levels=[0.5], colors="yellow", linewidths=1.0, origin="lower")
        _side_markers(ax, axis)
        ax.set_title(f"{title} {coords[axis]}")
        ax.set_axis_off()
    if seg is not None:
        _legend(fig, table, np.unique(seg[seg > 0]))
    fig.tight_layout()
    return fig


#: (screen-left, screen-right, bottom, top) letters of a slice normal to each RAS axis, as _slice shows it
_SIDES = {0: ("P", "A", "I", "S"), 1: ("L", "R", "I", "S"), 2: ("L", "R", "P", "A")}


def _side_markers(ax: Any, axis: int) -> None:
    """Letters at the edges of a slice saying which side of the patient each edge is (RAS canonical data)."""
    left, right, bottom, top = _SIDES[axis]
    style = dict(transform=ax.transAxes, color="white", fontsize=10, fontweight="bold")
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)


def plot_montage(
    image: Any,
    labels: Any | None = None,
    *,
    lut: str | Path | Mapping[int, Any] | None = None,
    axis: int = 2,
    n_slices: int = 12,
    columns: int = 6,
    alpha: float = 0.4,
    fig: matplotlib.figure.Figure | None = None,
) -> matplotlib.figure.Figure:
    """``n_slices`` evenly spaced slices along ``axis`` (2 = axial in RAS) in a grid, labels overlaid."""
    from matplotlib.figure import Figure

    _notebook_display()
    data, zooms = _canonical(image)
    seg = None
    if labels is not None:
        seg, _ = _canonical(labels)
        seg = np.rint(seg).astype(np.int32)
    present = np.flatnonzero(
        np.any((seg > 0) if seg is not None and seg.any() else (data > data.min()), axis=tuple(k for k in range(3) if k != axis))
    )
    first, last = (int(present[0]), int(present[-1])) if present.size else (0, data.shape[axis] - 1)
    indices = np.linspace(first, last, n_slices + 2)[1:-1].round().astype(int)
    rows = int(np.ceil(n_slices / columns))
    fig = fig or Figure(figsize=(2.2 * columns, 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    lo, hi = _window(data)
    table = load_lut(lut) if lut is not None else TISSUE_LUT
    cmap_norm = _label_cmap(table, int(seg.max())) if seg is not None and seg.any() else None
    for ax in axes[n_slices:]:
        ax.set_axis_off()
    for ax, index in zip(axes, indices, strict=False):  # the grid's last row may have spare axes (turned off above)
        ax.imshow(
            _slice(data, axis, index),
            cmap="gray",
            vmin=lo,
            vmax=hi,
            origin="lower",
            aspect=_aspect(zooms, axis),
            interpolation="nearest",
        )
        if seg is not None and cmap_norm is not None:
            ax.imshow(
                np.ma.masked_equal(_slice(seg, axis, index), 0),
                cmap=cmap_norm[0],
                norm=cmap_norm[1],
                alpha=alpha,
                origin="lower",
                aspect=_aspect(zooms, axis),
                interpolation="nearest",
            )
        _side_markers(ax, axis)
        ax.set_title(f"{'xyz'[axis]}={index}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_volumes(table: pandas.DataFrame, ax: matplotlib.axes.Axes | None = None) -> matplotlib.axes.Axes:
    """Horizontal bars of Volume_mm3 (shown in ml) per StructName of a segstats table; returns the axes.

    Takes the table (``SegStats.table``), so views know nothing of the stats module; a SegStats works too.
    """
    from matplotlib.figure import Figure

    table = getattr(table, "table", table)
    _notebook_display()
    if ax is None:
        ax = Figure(figsize=(6, 0.35 * len(table) + 1.2)).subplots()
    ax.barh(table["StructName"], table["Volume_mm3"] / 1000.0, color="0.45")
    ax.set_xlabel("volume (ml)")
    ax.invert_yaxis()
    return ax


def save_figure(fig: matplotlib.figure.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` (atomically) and return the path."""
    from ..safe_output import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _legend(fig: Any, lut: Mapping[int, LutEntry], labels: np.ndarray) -> None:
    from matplotlib.patches import Patch

    handles = []
    for label in labels[:12]:
        entry = lut.get(int(label))
        if entry is None:
            continue
        r, g, b, _ = entry.rgba
        handles.append(Patch(color=(r / 255, g / 255, b / 255), label=entry.name))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)
