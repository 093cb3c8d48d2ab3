"""Neural networks as block functions for :func:`hpclab.volumes.apply`: a small 3-D U-Net and a wrapper
that runs a torch model on a NumPy block (on the GPU when there is one).

Needs torch (the ``dl`` kernel); ``hpclab.volumes`` itself does not import this module.

    from hpclab.volumes.models import ModelBlock, UNet3D
    net = UNet3D(base=8, depth=2).eval()
    volumes.apply(ModelBlock(net), "em.zarr", "membranes.zarr", window=64, halo=net.halo, dtype="float32")

The windowed result equals the model on the whole volume (up to rounding) when the halo covers the
network's reach and window and halo are multiples of ``net.multiple`` (so every block's pooling grid
lines up with the whole volume's): :attr:`UNet3D.halo` is such a halo.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _double_conv(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(channels_in, channels_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv3d(channels_out, channels_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNet3D(nn.Module):
    """A small 3-D U-Net (Çiçek et al. 2016): ``depth`` poolings, ``base`` channels doubled per level, logits out.

    Input (N, in_channels, Z, Y, X) of any size: it is zero-padded at the far end to a multiple of
    2**depth and the output cropped back, so a block and the whole volume give the same values
    wherever the block's halo covers :attr:`reach`.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, base: int = 8, depth: int = 2) -> None:
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError(f"UNet3D needs depth >= 1 and base >= 1, got depth={depth}, base={base}")
        self.depth, self.base = depth, base
        widths = [base * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            [_double_conv(in_channels if level == 0 else widths[level - 1], widths[level]) for level in range(depth)]
        )
        self.bottom = _double_conv(widths[depth - 1], widths[depth])
        self.up = nn.ModuleList([nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2) for level in range(depth)])
        self.merge = nn.ModuleList([_double_conv(2 * widths[level], widths[level]) for level in range(depth)])
        self.head = nn.Conv3d(base, out_channels, 1)

    @property
    def multiple(self) -> int:
        """Windows and halos in multiples of this keep each block's pooling grid on the whole volume's."""
        return 2**self.depth

    @property
    def reach(self) -> int:
        """Voxels from an output voxel to the farthest input voxel it depends on (an upper bound).

        Per level l (scale 2**l): two 3-voxel convolutions on the way down and two on the way up
        (2**l each), the pooling and the up-sampling (2**l each); two convolutions at the bottom.
        """
        per_level = sum(6 * 2**level for level in range(self.depth))
        return per_level + 2 * 2**self.depth

    @property
    def halo(self) -> int:
        """The smallest halo that covers :attr:`reach` and keeps pooling grids aligned."""
        return math.ceil(self.reach / self.multiple) * self.multiple

    def bytes_per_voxel(self) -> int:
        """Working memory of one inference per input voxel (float32 activations alive at once, with margin).

        At full resolution the skip connection (base), the up-sampled map (base), their concatenation
        (2 base) and a convolution's output (base) are alive together; deeper levels add 1/8 per level
        with twice the channels; input, padding and output add a few floats. Doubled for the
        convolutions' workspace. For base 8, depth 2 this gives 452 bytes; measured on the CPU
        (peak RSS of one call): 443 at 64³, 267 at 96³, 242 at 128³.
        """
        full = 5 * self.base + 4
        deeper = sum(5 * self.base * 2**level / 8**level for level in range(1, self.depth + 1))
        return int(2 * 4 * (full + deeper))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[-3:]
        pad = [(-n) % self.multiple for n in spatial]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        x = self.bottom(x)
        for level in reversed(range(self.depth)):
            x = self.merge[level](torch.cat([skips.pop(), self.up[level](x)], dim=1))
        x = self.head(x)
        return x[..., : spatial[0], : spatial[1], : spatial[2]]


#: working memory per voxel assumed for a model that does not say (a U-Net of base 8 needs 452)
UNKNOWN_MODEL_BYTES_PER_VOXEL = 512


class ModelBlock:
    """A torch model as a block function: NumPy block in, the model's first output channel out, same shape.

    ``device``: "cuda", "cpu" or None (the GPU when torch sees one). ``threads``: torch's CPU
    threads in the worker (one per core the worker has; None leaves torch's default). ``scale``
    multiplies the block first (1/255 for uint8 data on a model trained on 0..1). ``activation``:
    "sigmoid" turns logits into probabilities, None returns the raw output.
    :attr:`bytes_per_voxel` tells :func:`~hpclab.volumes.apply` how large a window fits a worker.
    Pickles with the model's weights, so dask sends it to workers on other nodes.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | None = None,
        threads: int | None = None,
        scale: float = 1.0,
        activation: str | None = "sigmoid",
        bytes_per_voxel: int | None = None,
    ) -> None:
        if activation not in (None, "sigmoid"):
            raise ValueError(f"activation must be 'sigmoid' or None, got {activation!r}")
        self.model = model.eval()
        self.device = device
        self.threads = threads
        self.scale = scale
        self.activation = activation
        measure = getattr(model, "bytes_per_voxel", None)
        self.bytes_per_voxel = bytes_per_voxel or (measure() if callable(measure) else UNKNOWN_MODEL_BYTES_PER_VOXEL)
        self.gpu = self._device().startswith("cuda")

    def _device(self) -> str:
        """The device to run on here (resolved where the block is processed: a worker may have a GPU)."""
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, block: np.ndarray) -> np.ndarray:
        device = self._device()
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        model = self.model.to(device)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))[None, None].to(device)
            if self.scale != 1.0:
                x = x * self.scale
            y = model(x)[0, 0]
            if self.activation == "sigmoid":
                y = torch.sigmoid(y)
            return y.cpu().numpy()

    def __repr__(self) -> str:
        return f"ModelBlock({type(self.model).__name__}, device={self.device!r}, threads={self.threads})"


def receptive_reach(model: nn.Module, size: int = 64, trials: int = 3) -> int:
    """Measured reach of ``model``: how far from the centre the centre output's input gradient is non-zero.

    Measured on a copy with positive weights and positive inputs, so no ReLU is dead and the
    gradient covers every input the output can depend on (max pooling picks one input per cell:
    ``trials`` random inputs widen the cover).
    """
    probe = copy.deepcopy(model).eval()
    with torch.no_grad():
        for param in probe.parameters():
            param.abs_().add_(1e-3)
    grad = torch.zeros(size, size, size)
    c = size // 2
    for _ in range(trials):
        x = torch.rand(1, 1, size, size, size, requires_grad=True)
        probe(x)[0, 0, c, c, c].backward()
        assert x.grad is not None  # backward() filled it: x requires grad
        grad += x.grad[0, 0].abs()
    nonzero = torch.nonzero(grad > 0)
    return int((nonzero - c).abs().max()) if len(nonzero) else 0


__all__: list[Any] = ["ModelBlock", "UNet3D", "receptive_reach"]
