"""Large 3-D volumes in chunked zarr stores, processed in windows with halos on local or SLURM workers.

    from hpclab import volumes
    src = volumes.open_volume("em.zarr")
    out = volumes.apply(lambda b: scipy.ndimage.gaussian_filter(b, 2), src, "smooth.zarr", halo=8, workers=2)

The result equals the function applied to the whole volume whenever ``halo`` covers the function's
reach (edges included). See docs/volumes.md.
"""

from __future__ import annotations

from .apply import apply
from .store import COMPRESSIONS, create_volume, open_volume
from .windows import Window, plan_windows, window_for_memory

__all__ = ["COMPRESSIONS", "Window", "apply", "create_volume", "open_volume", "plan_windows", "window_for_memory"]
