"""Data sources for training: an ImageFolder directory, scikit-learn's digits (upscaled), synthetic tensors.

In-memory sources (digits, synthetic) are tensors that live on the training device and are batched by
``TensorLoader`` straight from a ``DistributedSampler``'s indices: no per-image collation and, on a GPU,
no host-to-device copies. An ImageFolder goes through a ``DataLoader`` with the same sampler.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataBundle:
    """What the trainer needs from a data source."""

    train: Any  # iterable of (images, labels) batches; has set_epoch(epoch) and __len__
    val: Any | None  # the same for validation (this rank's shard, no padding), or None
    num_classes: int
    train_size: int  # images in the whole training set (all ranks)
    val_size: int
    description: str


class TensorLoader:
    """Batches of ``images[idx], labels[idx]`` for the indices a DistributedSampler gives this rank.

    ``steps`` fixes the number of batches per epoch (cycling through further sampler epochs when the
    shard is shorter); otherwise an epoch is one pass over the shard (last partial batch dropped when
    ``drop_last``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        sampler: Any,
        batch_size: int,
        drop_last: bool = True,
        steps: int | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.sampler, self.batch_size, self.drop_last, self.steps = sampler, batch_size, drop_last, steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self, epoch: int) -> list[int]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        return list(iter(self.sampler))

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        produced, cycle = 0, 0
        total = len(self)
        while produced < total:
            # A cycle index far from real epochs keeps extra passes from repeating one order.
            indices = self._indices(self.epoch if cycle == 0 else self.epoch + 100_003 * cycle)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                if len(chunk) < self.batch_size and self.drop_last:
                    break
                idx = torch.tensor(chunk, dtype=torch.long, device=device)
                yield self.images.index_select(0, idx), self.labels.index_select(0, idx)
                produced += 1
                if produced >= total:
                    return
            cycle += 1
            if not indices or (len(indices) < self.batch_size and self.drop_last):
                raise ValueError(f"a shard of {len(indices)} images cannot fill one batch of {self.batch_size}")


class _Shard:
    """This rank's slice ``indices[rank::world]`` of a validation set, without DistributedSampler's padding."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _sampler(n: int, rank: int, world: int, shuffle: bool, seed: int) -> DistributedSampler:
    # the sampler only takes len() of its dataset: the indices stand in for it
    return DistributedSampler(cast(Dataset, range(n)), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def digits_tensors(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten 8x8 digits as 3-channel ``image_size`` images (bilinear), normalized."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # N,1,8,8 in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = _normalize(x.expand(-1, 3, -1, -1).contiguous())
    y = torch.from_numpy(digits.target).long()
    return x, y


def digits_split(image_size: int, val_fraction: float = 0.2, seed: int = 0):
    """(train images, train labels, val images, val labels) of the digits, split as training splits them."""
    x, y = digits_tensors(image_size)
    train_idx, val_idx = _split(len(x), val_fraction, seed)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    n_val = int(round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def synthetic_tensors(n: int, image_size: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random normal images and uniform labels, the same for a given seed on every rank."""
    g = torch.Generator().manual_seed(seed + 104729)
    x = torch.randn(n, 3, image_size, image_size, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def _tensor_bundle(x, y, val_x, val_y, num_classes, cfg, rank, world, device, description) -> DataBundle:
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = x.to(device).contiguous(memory_format=memory_format)
    y = y.to(device)
    train = TensorLoader(
        x, y, _sampler(len(x), rank, world, cfg.shuffle, cfg.seed), cfg.batch_size, drop_last=True, steps=cfg.steps_per_epoch
    )
    val = None
    if val_x is not None and len(val_x):
        val_x = val_x.to(device).contiguous(memory_format=memory_format)
        val = TensorLoader(val_x, val_y.to(device), _Shard(len(val_x), rank, world), cfg.batch_size, drop_last=False)
    return DataBundle(train, val, num_classes, len(x), 0 if val_x is None else len(val_x), description)


def image_folder_transforms(image_size: int):
    """(train, val) torchvision transforms: random resized crop + flip for training, resize + center crop."""
    from torchvision import transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    val = T.Compose([T.Resize(int(round(image_size / 0.875))), T.CenterCrop(image_size), T.ToTensor(), normalize])
    return train, val


class _LoaderWithEpoch:
    """A DataLoader over a DistributedSampler, with the TensorLoader interface (set_epoch, steps cap)."""

    def __init__(self, loader: DataLoader, sampler: Any, steps: int | None) -> None:
        self.loader, self.sampler, self.steps = loader, sampler, steps

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader) if self.steps is None else min(self.steps, len(self.loader))

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= len(self):
                return
            yield batch


def image_folder(cfg, rank: int, world: int, device: torch.device) -> DataBundle:
    """An ImageFolder: ``root/train`` + ``root/val`` when both exist, else ``root`` split by val_fraction."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data {cfg.data!r}: not 'synthetic', 'digits' or a directory")
    train_tf, val_tf = image_folder_transforms(cfg.image_size)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_set, val_set = ImageFolder(root / "train", train_tf), ImageFolder(root / "val", val_tf)
        if train_set.classes != val_set.classes:
            raise ValueError(f"{root}: train/ and val/ have different class folders")
        classes = train_set.classes
        where = f"{root}/{{train,val}}"
    else:
        full_train, full_val = ImageFolder(root, train_tf), ImageFolder(root, val_tf)
        train_idx, val_idx = _split(len(full_train), cfg.val_fraction, cfg.seed)
        train_set, val_set = Subset(full_train, train_idx.tolist()), Subset(full_val, val_idx.tolist())
        classes = full_train.classes
        where = f"{root} (val_fraction {cfg.val_fraction})"
    cuda = device.type == "cuda"
    sampler = _sampler(len(train_set), rank, world, cfg.shuffle, cfg.seed)
    common = dict(num_workers=cfg.workers, pin_memory=cuda, persistent_workers=cfg.workers > 0)
    if cfg.workers > 0:
        common["prefetch_factor"] = 4
    train = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **common)
    val = None
    if len(val_set):
        val = DataLoader(val_set, batch_size=cfg.batch_size, sampler=_Shard(len(val_set), rank, world), drop_last=False, **common)
    return DataBundle(
        _LoaderWithEpoch(train, sampler, cfg.steps_per_epoch),
        val,
        len(classes),
        len(train_set),
        len(val_set),
        f"ImageFolder {where}: {len(classes)} classes, {len(train_set)} train / {len(val_set)} val images",
    )


def build_data(cfg, rank: int, world: int, device: torch.device) -> DataBundle:
    """The DataBundle for ``cfg.data`` as seen by ``rank`` of ``world``."""
    if cfg.data == "synthetic":
        num_classes = cfg.num_classes or 1000
        x, y = synthetic_tensors(cfg.synthetic_size, cfg.image_size, num_classes, cfg.seed)
        return _tensor_bundle(
            x,
            y,
            None,
            None,
            num_classes,
            cfg,
            rank,
            world,
            device,
            f"synthetic: {cfg.synthetic_size} images {cfg.image_size}x{cfg.image_size}, {num_classes} classes",
        )
    if cfg.data == "digits":
        x, y, val_x, val_y = digits_split(cfg.image_size, cfg.val_fraction, cfg.seed)
        return _tensor_bundle(
            x,
            y,
            val_x,
            val_y,
            10,
            cfg,
            rank,
            world,
            device,
            f"digits (scikit-learn) upscaled to {cfg.image_size}x{cfg.image_size}: {len(x)} train / {len(val_x)} val images",
        )
    return image_folder(cfg, rank, world, device)


def export_digits_image_folder(
    root: str | os.PathLike, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0, limit: int | None = None
) -> Path:
    """Write scikit-learn's digits as PNGs in ``root/train/<digit>/`` and ``root/val/<digit>/``.

    A real ImageFolder to try ``--data DIR`` on (or to see the layout an EuroSAT-style dataset needs).
    ``limit`` keeps only the first images of each split. Returns ``root``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    train_idx, val_idx = _split(len(digits.images), val_fraction, seed)
    root = Path(root)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for i in idx.tolist()[: limit or None]:
            folder = root / split / str(int(digits.target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255.0 / 16.0)).round().astype("uint8")
            Image.fromarray(pixels).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR).save(
                folder / f"{i:04d}.png"
            )
    return root
