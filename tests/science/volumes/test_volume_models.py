"""hpclab.volumes.models: a 3-D U-Net run in windows gives the whole-volume output, its reach bound holds,
and windows are sized from the model's working memory per voxel. torch on the CPU (the main venv's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpclab import volumes
from hpclab.volumes.apply import RECORD
from hpclab.volumes.models import ModelBlock, UNet3D, receptive_reach

SHAPE = (40, 37, 45)  # no multiple of the window or of the pooling grid


@pytest.fixture(scope="module")
def net() -> UNet3D:
    torch.manual_seed(3)
    model = UNet3D(base=4, depth=2).eval()
    for module in model.modules():  # He init: the deep levels' signal reaches the output (torch's default damps it)
        if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_reach_bound_covers_the_measured_receptive_field(depth):
    torch.manual_seed(depth)
    model = UNet3D(base=1, depth=depth)
    measured = receptive_reach(model, size=2 * model.reach + 8)
    assert 0 < measured <= model.reach <= model.halo and model.halo % model.multiple == 0


def test_windowed_unet_equals_the_whole_volume_unet(net, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=SHAPE).astype(np.float32)
    whole = ModelBlock(net, device="cpu", threads=1)(data)
    out = volumes.apply(ModelBlock(net, device="cpu", threads=1), data, tmp_path / "p.zarr", window=16,
                        halo=net.halo, workers=1, progress=False)
    assert np.abs(out[:] - whole).max() < 1e-5
    assert ((whole > 0) & (whole < 1)).all()  # sigmoid probabilities


def test_without_its_halo_the_unet_differs_at_window_borders(net, tmp_path):
    data = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    whole = ModelBlock(net, device="cpu")(data)
    out = volumes.apply(ModelBlock(net, device="cpu"), data, tmp_path / "p.zarr", window=16, halo=4,
                        workers=1, progress=False)
    assert np.abs(out[:] - whole).max() > 1e-2


def test_windows_are_sized_from_the_models_memory_per_voxel(net, tmp_path):
    func = ModelBlock(net, device="cpu")
    assert func.bytes_per_voxel == net.bytes_per_voxel() > 8 * 4  # more than four float64 copies
    data = np.zeros((64, 64, 64), np.float32)
    budget = 256 * 2**20
    out = volumes.apply(func, data, tmp_path / "p.zarr", halo=net.halo, workers=1, memory_per_worker=budget,
                        progress=False)
    window = out.attrs[RECORD]["window"]
    expected = volumes.window_for_memory(data.shape, budget, (net.halo,) * 3, bytes_per_voxel=func.bytes_per_voxel)
    assert tuple(window) == expected
    assert (window[0] + 2 * net.halo) ** 3 * func.bytes_per_voxel <= budget or window[0] == 8
    generic = volumes.window_for_memory(data.shape, budget, (net.halo,) * 3)
    assert window[0] < generic[0]  # a model needs smaller windows than a filter


def test_modelblock_refuses_an_unknown_activation(net):
    with pytest.raises(ValueError, match="activation"):
        ModelBlock(net, activation="softmax")


def test_a_model_for_the_gpu_is_sized_from_the_gpu(net, tmp_path):
    """ModelBlock(device="cuda") marks the function for the GPU: apply sizes its windows from the GPU's free
    memory, and where torch sees no GPU (this machine and CI) it says so instead of sizing from the host."""
    func = ModelBlock(net, device="cuda")
    assert func.gpu is True and ModelBlock(net, device="cpu").gpu is False
    data = np.zeros((16, 16, 16), np.float32)
    if torch.cuda.is_available():
        out = volumes.apply(func, data, tmp_path / "g.zarr", halo=net.halo, workers=1, progress=False)
        free = torch.cuda.mem_get_info()[0]
        assert tuple(out.attrs[RECORD]["window"]) == volumes.window_for_memory(
            data.shape, free, (net.halo,) * 3, bytes_per_voxel=func.bytes_per_voxel)
    else:
        with pytest.raises(RuntimeError, match="torch sees no GPU here"):
            volumes.apply(func, data, tmp_path / "g.zarr", halo=net.halo, workers=1, progress=False)
