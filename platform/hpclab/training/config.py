"""Training settings: one dataclass, its command-line flags, and their round trip (no torch import)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

BACKENDS = ("auto", "horovod", "ddp", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
NORMS = ("batch", "group", "none")
SCHEDULES = ("cosine", "step", "constant")
LR_SCALING = ("linear", "sqrt", "none")
PROGRESS = ("auto", "bar", "log", "off")


@dataclass
class TrainConfig:
    """Everything one data-parallel training run needs; every field is also a ``--flag`` (see ``to_argv``).

    ``batch_size`` is per process; the global batch is ``batch_size × world size``. The peak learning
    rate is ``lr`` scaled by ``global batch / lr_reference_batch`` (``lr_scaling="linear"``, Goyal et
    al. 2017) and reached by a linear warm-up from ``lr`` over ``warmup_epochs``.
    """

    data: str = "synthetic"  # "synthetic", "digits" or an ImageFolder directory
    arch: str = "resnet50"  # any torchvision classification model name
    norm: str = "batch"  # resnets only: "batch" (torchvision's), "group" or "none"
    image_size: int = 224
    num_classes: int | None = None  # synthetic only (default 1000); others infer it from the data
    epochs: int = 1
    batch_size: int = 32
    steps_per_epoch: int | None = None  # cap (or, for synthetic data, fix) the steps of an epoch
    lr: float = 0.1
    lr_reference_batch: int = 256
    lr_scaling: str = "linear"
    warmup_epochs: float = 0.0
    schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    val_fraction: float = 0.2  # digits, and an ImageFolder without train/ and val/
    synthetic_size: int = 512  # images in the synthetic set
    shuffle: bool = True
    seed: int = 0
    backend: str = "auto"  # "horovod", "ddp" (torch.distributed), "none" or "auto"
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda"
    amp: str = "auto"  # "auto" = bf16 on CUDA, off on CPU
    channels_last: bool | None = None  # None = on CUDA only
    compile: bool = False  # torch.compile the model
    workers: int = 4  # DataLoader workers (ImageFolder only)
    threads: int | None = None  # CPU threads per process (None: cores / local processes)
    out_dir: str = "runs/resnet"
    checkpoint: bool = True  # rank 0 writes out_dir/checkpoint.pt after each epoch
    resume: bool = False  # continue from out_dir/checkpoint.pt if it exists
    save_rank_states: bool = False  # every rank writes out_dir/rank<r>.pt at the end (consistency checks)
    timing_skip_steps: int = 3  # steps of each epoch left out of images/s (warm-up)
    log_every: int = 10  # steps between progress events
    progress: str = "auto"  # "bar" (tqdm), "log" (lines), "off"; auto = bar on a terminal

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for a setting that cannot work."""
        for name, allowed in (
            ("backend", BACKENDS),
            ("amp", AMP_MODES),
            ("norm", NORMS),
            ("schedule", SCHEDULES),
            ("lr_scaling", LR_SCALING),
            ("progress", PROGRESS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        positive = ("image_size", "epochs", "batch_size", "lr_reference_batch", "synthetic_size", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1; got {self.steps_per_epoch}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if self.lr <= 0 or self.warmup_epochs < 0 or self.workers < 0 or self.timing_skip_steps < 0:
            raise ValueError("lr must be > 0; warmup_epochs, workers and timing_skip_steps >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")

    # -- round trip -----------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_argv(self) -> list[str]:
        """The flags that rebuild this config through ``add_arguments`` (only those not at their default)."""
        argv: list[str] = []
        default = TrainConfig()
        for f in fields(self):
            value = getattr(self, f.name)
            if value == getattr(default, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            if f.type == "bool | None":
                argv.append(f"{flag}={'auto' if value is None else str(value).lower()}")
            elif isinstance(value, bool):
                argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif value is None:
                argv.append(f"{flag}=auto")
            else:
                argv.append(f"{flag}={value}")
        return argv

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


_HELP = {
    "data": "'synthetic', 'digits' (scikit-learn's 8x8 digits, upscaled) or an ImageFolder directory "
    "(class sub-folders; or train/ and val/ each with class sub-folders)",
    "arch": "torchvision classification model (resnet18, resnet50, resnet101, wide_resnet50_2, ...)",
    "norm": "normalization layer of a resnet: batch (torchvision default), group (GroupNorm), none",
    "batch_size": "images per process and step (global batch = this x processes)",
    "steps_per_epoch": "cap the steps of an epoch (synthetic data: exactly this many)",
    "lr": "base learning rate for a global batch of --lr-reference-batch images",
    "lr_scaling": "peak lr = lr x (global batch / reference batch) [linear], its square root [sqrt], or lr [none]",
    "warmup_epochs": "linear warm-up from --lr to the scaled peak over this many epochs",
    "backend": "horovod (hvd.DistributedOptimizer), ddp (torch.distributed), none (one process), "
    "auto (from the launcher's environment)",
    "amp": "mixed precision: auto = bf16 autocast on CUDA, off on CPU",
    "channels_last": "channels_last memory format (default: on CUDA)",
    "threads": "torch threads per process on the CPU (default: cores / local processes)",
    "out_dir": "where rank 0 writes checkpoint.pt, metrics.csv, metrics.json and events.jsonl",
    "resume": "continue from OUT_DIR/checkpoint.pt when it exists",
    "progress": "rank 0's progress: bar (tqdm), log (lines), off; auto = bar on a terminal, else log",
}


def _parse_optional(kind):
    def parse(text: str):
        return None if text in ("auto", "none", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per TrainConfig field (``--batch-size``, ``--no-checkpoint``, ...)."""
    default = TrainConfig()
    choices = {
        "backend": BACKENDS,
        "amp": AMP_MODES,
        "norm": NORMS,
        "schedule": SCHEDULES,
        "lr_scaling": LR_SCALING,
        "progress": PROGRESS,
    }
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(default, f.name)
        help_text = _HELP.get(f.name, "")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=value, help=help_text or None)
        elif f.type in ("bool | None",):
            parser.add_argument(
                flag, dest=f.name, default=value, type=_parse_bool_or_none, metavar="{auto,true,false}", help=help_text or None
            )
        else:
            base = {"int": int, "float": float, "str": str, "int | None": _parse_optional(int)}[str(f.type)]
            parser.add_argument(
                flag,
                dest=f.name,
                default=value,
                type=base,
                choices=choices.get(f.name),
                help=(help_text + f" (default: {value})").strip(),
            )


def _parse_bool_or_none(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("auto", "none", ""):
        return None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto, true or false; got {text!r}")


def from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed ``add_arguments`` flags (other attributes are ignored)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def parse_argv(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="hpclab train resnet")
    add_arguments(parser)
    return from_args(parser.parse_args(argv))
