"""Measured GPU use for reclaim (issue 31): NVML's utilisation of the GPUs a server holds, where a driver is present.

NVML (nvidia-ml-py, the library ``nvidia-smi`` uses) reports per GPU the percentage of the last sample period during
which a kernel ran on it. Reclaim samples it at each look while a start waits, like the cgroup's CPU time, and averages
over its window. Where NVML cannot be loaded (no NVIDIA driver: this project's test machines) or a held GPU is not one
NVML knows (a pool of names such as ``fake0``), :func:`gpu_busy` answers None and reclaim measures CPU use instead.
"""

from __future__ import annotations

import threading
from typing import Any

import pynvml

_LOCK = threading.Lock()
_STATE: dict[str, bool] = {}  # "ok": whether NVML loaded, once tried (the reason it did not: lab_features.gpu_driver_problem)


def nvml_available() -> bool:
    """Whether NVML is loaded (tried once per hub process, and kept loaded for the samples)."""
    with _LOCK:
        if "ok" not in _STATE:
            try:
                pynvml.nvmlInit()
                _STATE["ok"] = True
            except pynvml.NVMLError:  # no driver, no library, no device
                _STATE["ok"] = False
        return bool(_STATE["ok"])


def _handle(gpu_id: str) -> Any:
    """NVML's handle of a GPU as the pool names it: an index ('0') or a UUID ('GPU-…', 'MIG-…')."""
    if gpu_id.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
    return pynvml.nvmlDeviceGetHandleByUUID(gpu_id)


def gpu_busy(gpu_ids: tuple[str, ...] | list[str]) -> float | None:
    """The mean busy fraction (0-1) of these GPUs now, from NVML; None without NVML or for a GPU it does not know."""
    if not gpu_ids or not nvml_available():
        return None
    try:
        rates = [pynvml.nvmlDeviceGetUtilizationRates(_handle(gpu_id)).gpu for gpu_id in gpu_ids]
    except pynvml.NVMLError:
        return None
    return sum(rates) / len(rates) / 100.0
