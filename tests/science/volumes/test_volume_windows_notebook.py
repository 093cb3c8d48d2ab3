"""notebooks/volume-windows.ipynb runs top to bottom in its curated `dl` kernel (.venv-dl, torch on the CPU here):
an EM-like volume made in windows, a Gaussian and a U-Net in windows equal to their whole-volume calls,
the windows drawn, and each worker's peak memory under its limit."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from support.dltools import require_dl_venv
from support.notebooktools import curated_kernels, run_notebook  # noqa: F401 (fixture)
from support.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "volume-windows.ipynb"
CI_PARAMETERS = "SIZE = 96\nCHUNK = 32\nWORKER_MEMORY = '1GiB'\nWINDOW = 32\nTRAIN_STEPS = 40"


def _stdout(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_first_cell_says_which_profiles_offer_the_dl_kernel():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata.kernelspec.name == "dl"
    first = nb.cells[0]
    assert "needs the `dl` kernel" in first.source and "on the GPU profile and on *CPU (large)*" in first.source
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    # a first run's size: 512³ with a GPU, 256³ without, workers sized from the session's memory
    assert "SIZE = None" in params.source and "WORKER_MEMORY = None" in params.source
    assert "SIZE = 512 if GPU else 256" in nb.cells[2].source


@pytest.mark.timeout(600)
def test_notebook_runs_a_filter_and_a_unet_in_windows_within_each_workers_memory(curated_kernels, tmp_path):
    require_dl_venv()
    outputs = run_notebook(NOTEBOOK, "dl", tmp_path, CI_PARAMETERS, timeout=400)
    text = _stdout(outputs)
    assert "no GPU (the U-Net runs on the CPU workers)" in text
    assert "EM-like volume (96, 96, 96)" in text
    # the filter: 27 windows of 32, equal to the whole-volume call
    assert "windows [32, 32, 32], halo 8" in text
    assert float(re.search(r"whole volume: .*largest difference ([0-9.e+-]+)", text).group(1)) < 1e-5
    assert "windows crossing z = 48: 9 of 27" in text
    # the U-Net: trained (loss fell), windows sized from the worker's memory, equal to the whole-volume call
    first, last = map(float, re.search(r"loss ([0-9.]+) -> ([0-9.]+) over 40 steps", text).groups())
    assert last < first
    window = int(re.search(r"U-Net in windows of \[(\d+), \1, \1\] \(\+28 halo\) on 2 CPU workers", text).group(1))
    assert window < 96 and window % 32 == 0  # smaller than the volume: 1 GiB workers cannot take it whole
    assert float(re.search(r"U-Net on the whole volume: .*largest difference ([0-9.e+-]+)", text).group(1)) < 1e-4
    # each worker's ceiling and what it used
    peaks = [float(p) for p in re.findall(r"1\.00 GiB +([0-9.]+) GiB", text)]
    assert len(peaks) == 2 and all(0.05 < p < 0.8 for p in peaks), text  # under dask's pause mark (80 %)
    dice = float(re.search(r"Dice ([0-9.]+)", text).group(1))
    assert dice > 0.4  # 40 steps find most membranes (0.65 measured; 300 steps, the default: 0.88)
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 5  # slices, windows over a slice, loss curve, worker memory, results
    assert not list(Path(tmp_path, "volume-windows").glob("*.zarr/.hpclab-windows"))  # every run finished
