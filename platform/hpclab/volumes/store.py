"""zarr v3 volumes: open one, or create one with the compression that suits the store.

N5: zarr-python 3 has no N5 store (zarr 2's ``N5Store`` was not carried over), so N5 volumes are
read with zarr 2 or tensorstore and copied once into zarr v3; docs/volumes.md shows how.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: compression name -> zarr v3 codecs. zstd (through blosc, bit-shuffled) for shared file systems:
#: small files, few inodes, good ratio on EM/MRI data; lz4 where decompression speed matters more
#: (node-local scratch); none for data that does not compress (already compressed, noise).
COMPRESSIONS = ("zstd", "lz4", "none")


def _compressors(compression: str) -> Any:
    from zarr.codecs import BloscCodec

    if compression == "zstd":
        return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]
    if compression == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    if compression == "none":
        return None
    raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")


def open_volume(volume: Any, mode: str = "r") -> Any:
    """A zarr array for ``volume``: a zarr array (returned as is), a path to one, or a NumPy array (in memory)."""
    import zarr

    if isinstance(volume, zarr.Array):
        return volume
    if isinstance(volume, np.ndarray):
        return volume
    path = Path(volume)
    if not (path / "zarr.json").exists() and not (path / ".zarray").exists():
        raise FileNotFoundError(f"{path} is not a zarr array (no zarr.json or .zarray in it)")
    return zarr.open_array(str(path), mode=mode)


def create_volume(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    dtype: Any,
    *,
    chunks: Sequence[int],
    compression: str = "zstd",
    attributes: dict[str, Any] | None = None,
) -> Any:
    """A new zarr v3 array at ``path`` (refuses to replace one)."""
    import zarr

    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists; open it with open_volume or choose another path")
    array = zarr.create_array(
        store=str(target),
        shape=tuple(int(n) for n in shape),
        dtype=np.dtype(dtype),
        chunks=tuple(int(c) for c in chunks),
        compressors=_compressors(compression),
        fill_value=0,
    )
    if attributes:
        array.attrs.update(attributes)
    return array


def local_path(array: Any) -> Path | None:
    """The folder of a zarr array kept on the local file system (None for memory stores and NumPy)."""
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    if root is None:
        return None
    name = getattr(array, "path", "") or ""
    return Path(str(root)) / name
