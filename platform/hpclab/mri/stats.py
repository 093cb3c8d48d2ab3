"""FreeSurfer-style segmentation statistics (``mri_segstats``) for any label volume, in one pass.

Volume_mm3 is NVoxels times the voxel volume. FreeSurfer's ``aseg.stats`` is made with
``--pv norm.mgz`` (partial-volume correction), so its Volume_mm3 differs from NVoxels x voxel
volume by a few percent per structure; this module does not apply that correction.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .lut import LutEntry, load_lut

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.axes
    import pandas as pd

COLUMNS = ("Index", "SegId", "NVoxels", "Volume_mm3", "StructName")
STAT_SUFFIXES = ("Mean", "StdDev", "Min", "Max", "Range")
_FIELD_NAMES = {"Mean": "Intensity", "StdDev": "Itensity", "Min": "Intensity", "Max": "Intensity", "Range": "Intensity"}


@dataclass(frozen=True)
class SegStats:
    """The statistics table of one label volume, plus what the mri_segstats header needs."""

    table: pd.DataFrame
    voxel_volume: float
    intensity_name: str = "norm"
    intensity_units: str = "MR"
    sources: Mapping[str, str] = field(default_factory=dict)
    excluded: tuple[int, ...] = (0,)
    non_empty_only: bool = True
    #: extra header lines (without "# "), e.g. FreeSurfer-style "Measure ..." and "QC ..." lines
    notes: tuple[str, ...] = ()

    def to_text(self) -> str:
        """The table in ``mri_segstats --sum`` format (``# ColHeaders`` header, ``%10.4f`` columns)."""
        return format_segstats(self)

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_text` to ``path`` (atomically: an interrupted write keeps the old file) and return it."""
        from ..safe_output import atomic_output

        path = Path(path)
        with atomic_output(path) as tmp:
            tmp.write_text(self.to_text())
        return path

    def volume(self, name_or_id: str | int) -> float:
        """Volume_mm3 of one structure, by StructName or SegId (KeyError if it is not in the table)."""
        column = "SegId" if isinstance(name_or_id, (int, np.integer)) else "StructName"
        rows = self.table[self.table[column] == name_or_id]
        if rows.empty:
            raise KeyError(f"no structure {name_or_id!r} in this table")
        return float(rows["Volume_mm3"].iloc[0])

    def plot(self, ax: matplotlib.axes.Axes | None = None) -> matplotlib.axes.Axes:
        """Horizontal bar chart of Volume_mm3 per structure; returns the axes."""
        from .views import plot_volumes

        return plot_volumes(self.table, ax=ax)


def segstats(
    labels: Any,
    intensity: Any | None = None,
    lut: str | Path | Mapping[int, str] | Mapping[int, LutEntry] | None = None,
    *,
    exclude: Iterable[int] = (0,),
    empty: bool = False,
    intensity_name: str = "norm",
    intensity_units: str = "MR",
    voxel_size: Iterable[float] | None = None,
) -> SegStats:
    """Compute mri_segstats' table for ``labels`` (a NIfTI path, nibabel image or array).

    NVoxels is exact; Volume_mm3 = NVoxels x voxel volume; intensity columns are computed from
    ``intensity`` as mri_segstats does (mean, sample std with n-1, min, max, range; zeros when a
    label is empty). Names come from ``lut`` (a LUT file, ``"aseg"``, ``"tissue"`` or a mapping);
    without one they are ``Seg%04d``. ``empty=True`` lists every LUT label, also absent ones.
    """
    import pandas as pd

    seg_arr, seg_zooms, seg_src = _as_array(labels, "labels")
    if voxel_size is not None:
        zooms = tuple(float(v) for v in voxel_size)
    elif seg_zooms is not None:
        zooms = seg_zooms
    else:
        raise ValueError("labels is a plain array: pass voxel_size=(dx, dy, dz) in mm")
    voxel_volume = float(np.prod(zooms[:3]))
    if seg_arr.ndim == 4 and seg_arr.shape[3] == 1:
        seg_arr = seg_arr[..., 0]
    if seg_arr.ndim != 3:
        raise ValueError(f"labels {seg_src or ''} must be 3-D, got shape {seg_arr.shape}".replace("  ", " "))
    if not np.issubdtype(seg_arr.dtype, np.integer):
        rounded = np.rint(seg_arr)
        if not np.array_equal(rounded, seg_arr):
            raise ValueError(f"labels {seg_src or ''} holds non-integer values: not a label volume")
        seg_arr = rounded.astype(np.int64)
    flat = seg_arr.reshape(-1)
    if flat.size and flat.min() < 0:
        raise ValueError(f"labels {seg_src or ''} holds negative ids")

    table_lut = load_lut(lut) if lut is not None else None
    excluded = tuple(sorted({int(x) for x in exclude}))

    int_arr = None
    int_src = ""
    if intensity is not None:
        int_arr, _, int_src = _as_array(intensity, "intensity")
        if int_arr.ndim == 4 and int_arr.shape[3] == 1:
            int_arr = int_arr[..., 0]
        if int_arr.shape != seg_arr.shape:
            raise ValueError(
                f"intensity {int_src} has shape {int_arr.shape}, labels {seg_src} has {seg_arr.shape}: "
                "they must be on the same voxel grid"
            )

    ids, counts, stats = _label_stats(flat, None if int_arr is None else int_arr.reshape(-1))
    if empty:
        if table_lut is None:
            raise ValueError("empty=True needs a lut: it lists every label of the colour table")
        wanted = sorted(set(table_lut) | set(ids.tolist()))
    else:
        wanted = ids.tolist()
    wanted = [i for i in wanted if i not in excluded]
    position = {int(i): k for k, i in enumerate(ids.tolist())}

    rows: list[dict[str, Any]] = []
    for n, seg_id in enumerate(wanted, 1):
        k = position.get(seg_id)
        nvox = int(counts[k]) if k is not None else 0
        if table_lut is not None:
            name = table_lut[seg_id].name if seg_id in table_lut else f"Seg{seg_id:04d}"
        else:
            name = f"Seg{seg_id:04d}"
        row: dict[str, Any] = {
            "Index": n,
            "SegId": seg_id,
            "NVoxels": nvox,
            "Volume_mm3": nvox * voxel_volume,
            "StructName": name,
        }
        if int_arr is not None:
            values = stats[k] if k is not None else (0.0, 0.0, 0.0, 0.0, 0.0)
            for suffix, value in zip(STAT_SUFFIXES, values, strict=True):
                row[f"{intensity_name}{suffix}"] = float(value)
        rows.append(row)
    columns = list(COLUMNS) + ([f"{intensity_name}{s}" for s in STAT_SUFFIXES] if int_arr is not None else [])
    table = pd.DataFrame(rows, columns=columns)
    table = table.astype({"Index": "int64", "SegId": "int64", "NVoxels": "int64", "Volume_mm3": "float64"})
    sources = {"SegVolFile": seg_src}
    if lut is not None and not isinstance(lut, Mapping) and str(lut) not in ("aseg", "tissue"):
        sources["ColorTable"] = str(lut)
    if int_arr is not None:
        sources["InVolFile"] = int_src
    return SegStats(
        table=table,
        voxel_volume=voxel_volume,
        intensity_name=intensity_name,
        intensity_units=intensity_units,
        sources={k: v for k, v in sources.items() if v},
        excluded=excluded,
        non_empty_only=not empty,
    )


def _as_array(obj: Any, what: str) -> tuple[np.ndarray, tuple[float, ...] | None, str]:
    """(array, voxel size or None, source name) from a path, a nibabel image or an array."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    if isinstance(obj, (str, Path)):
        path = Path(obj)
        try:
            img = nib.load(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} file {path} does not exist") from None
        except Exception as exc:  # nibabel raises several types for unreadable files
            raise ValueError(f"cannot read {what} file {path}: {exc}") from None
        if not isinstance(img, SpatialImage):  # e.g. a GIFTI surface: no voxels
            raise ValueError(f"{what} file {path} is a {type(img).__name__}, not a volume image")
        return np.asanyarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()), str(path)
    if hasattr(obj, "dataobj") and hasattr(obj, "header"):
        name = getattr(obj, "get_filename", lambda: None)() or ""
        return np.asanyarray(obj.dataobj), tuple(float(z) for z in obj.header.get_zooms()), name
    return np.asarray(obj), None, ""


def _label_stats(labels: np.ndarray, values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Per-label count and (mean, std, min, max, range) with one sort of the label array."""
    order = np.argsort(labels, kind="stable")  # radix sort for 8/16-bit labels
    sorted_labels = labels[order]
    if sorted_labels.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), []
    starts = np.flatnonzero(np.concatenate(([True], sorted_labels[1:] != sorted_labels[:-1])))
    ids = sorted_labels[starts].astype(np.int64)
    counts = np.diff(np.append(starts, sorted_labels.size))
    stats: list[tuple] = []
    if values is not None:
        v = values[order].astype(np.float64)
        sums = np.add.reduceat(v, starts)
        sums2 = np.add.reduceat(v * v, starts)
        mins = np.minimum.reduceat(v, starts)
        maxs = np.maximum.reduceat(v, starts)
        for n, s, s2, lo, hi in zip(counts, sums, sums2, mins, maxs, strict=True):
            mean = s / n
            # mri_segstats: sqrt((n*mean^2 - 2*mean*sum + sum2) / (n-1)), 0 for a single voxel
            var = (n * mean * mean - 2.0 * mean * s + s2) / (n - 1) if n > 1 else 0.0
            stats.append((mean, float(np.sqrt(max(var, 0.0))), lo, hi, hi - lo))
    return ids, counts, stats


def format_segstats(stats: SegStats, *, cmdline: str | None = None) -> str:
    """Render ``stats`` exactly like mri_segstats' summary file (header comments, then fixed-width rows)."""
    name = stats.intensity_name
    has_intensity = f"{name}Mean" in stats.table.columns
    lines = [
        "# Title Segmentation Statistics ",
        "# ",
        "# generating_program hpclab.mri.segstats",
        f"# cvs_version hpclab {_version()}",
        f"# cmdline {cmdline or 'hpclab.mri.segstats'}",
        f"# sysname  {platform.system()}",
        f"# hostname {platform.node()}",
        f"# machine  {platform.machine()}",
        f"# user     {_user()}",
        "# anatomy_type volume",
        "# ",
    ]
    src = stats.sources
    if "SegVolFile" in src:
        lines.append(f"# SegVolFile {src['SegVolFile']} ")
        lines.append(f"# SegVolFileTimeStamp  {_timestamp(src['SegVolFile'])} ")
    if "ColorTable" in src:
        lines.append(f"# ColorTable {src['ColorTable']} ")
        lines.append(f"# ColorTableTimeStamp {_timestamp(src['ColorTable'])} ")
    if "InVolFile" in src:
        lines.append(f"# InVolFile  {src['InVolFile']} ")
        lines.append(f"# InVolFileTimeStamp  {_timestamp(src['InVolFile'])} ")
        lines.append("# InVolFrame 0 ")
    if stats.excluded:
        lines.append("# ExcludeSegId " + "".join(f"{i} " for i in stats.excluded))
    if stats.non_empty_only:
        lines.append("# Only reporting non-empty segmentations")
    lines.append(f"# VoxelVolume_mm3 {stats.voxel_volume:g} ")
    lines += [f"# {note}" for note in stats.notes]
    lines += [
        "# TableCol  1 ColHeader Index ",
        "# TableCol  1 FieldName Index ",
        "# TableCol  1 Units     NA ",
        "# TableCol  2 ColHeader SegId ",
        "# TableCol  2 FieldName Segmentation Id",
        "# TableCol  2 Units     NA",
        "# TableCol  3 ColHeader NVoxels ",
        "# TableCol  3 FieldName Number of Voxels",
        "# TableCol  3 Units     unitless",
        "# TableCol  4 ColHeader Volume_mm3",
        "# TableCol  4 FieldName Volume",
        "# TableCol  4 Units     mm^3",
        "# TableCol  5 ColHeader StructName",
        "# TableCol  5 FieldName Structure Name",
        "# TableCol  5 Units     NA",
    ]
    n = 6
    if has_intensity:
        for suffix in STAT_SUFFIXES:
            pad = " " if suffix == "Mean" else ""
            lines.append(f"# TableCol {n:2d} ColHeader {name}{suffix}{pad}")
            lines.append(f"# TableCol {n:2d} FieldName {_FIELD_NAMES[suffix]} {name}{suffix}")
            lines.append(f"# TableCol {n:2d} Units     {stats.intensity_units}")
            n += 1
    lines.append(f"# NRows {len(stats.table)} ")
    lines.append(f"# NTableCols {n - 1} ")
    header = "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName "
    if has_intensity:
        header += " ".join(f"{name}{s}" for s in STAT_SUFFIXES) + "  "
    lines.append(header)
    for row in stats.table.itertuples(index=False):
        r = row._asdict()
        text = f"{int(r['Index']):3d} {int(r['SegId']):3d}  {int(r['NVoxels']):8d} {float(r['Volume_mm3']):10.1f}  "
        text += f"{str(r['StructName']):<30} "
        if has_intensity:
            text += "".join(f"{float(r[f'{name}{s}']):10.4f} " for s in STAT_SUFFIXES)
        lines.append(text)
    return "\n".join(lines) + "\n"


def read_segstats(path: str | Path) -> pd.DataFrame:
    """Read an mri_segstats summary file (ours or FreeSurfer's ``aseg.stats``) into a DataFrame."""
    import pandas as pd

    path = Path(path)
    headers: list[str] | None = None
    rows: list[list[Any]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("# ColHeaders"):
            headers = line[len("# ColHeaders") :].split()
            continue
        if line.startswith("#") or not line.strip():
            continue
        if headers is None:
            raise ValueError(f"{path}:{lineno}: table row before the '# ColHeaders' line")
        fields = line.split()
        if len(fields) != len(headers):
            raise ValueError(f"{path}:{lineno}: {len(fields)} fields, header has {len(headers)}")
        rows.append([_number(v) for v in fields])
    if headers is None:
        raise ValueError(f"{path}: no '# ColHeaders' line: not an mri_segstats summary file")
    return pd.DataFrame(rows, columns=headers)


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _version() -> str:
    from .. import __version__

    return __version__


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry inside some containers
        return "unknown"


def _timestamp(source: str) -> str:
    try:
        mtime = Path(source).stat().st_mtime
    except OSError:
        return "unknown"
    return _dt.datetime.fromtimestamp(mtime).strftime("%Y/%m/%d %H:%M:%S")
