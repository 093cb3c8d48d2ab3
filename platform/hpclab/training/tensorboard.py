"""Rank 0's scalars as TensorBoard event files beside its metrics, for the TensorBoard app (hpclab.apps).

tensorboardX writes them (in the dl environment: no TensorFlow); where only TensorBoard itself is installed,
torch.utils.tensorboard does; with neither, no event files are written and the run says so once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

EPOCH_SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_seconds")


def _summary_writer_class() -> Any:
    try:
        from tensorboardX import SummaryWriter  # deferred: only rank 0 of a run writes events
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except ImportError:
            return None
    return SummaryWriter


class EventWriter:
    """``train/loss`` and ``train/lr`` at each logged step, ``epoch/<metric>`` after each epoch (x: the global step)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.writer = None
        if out_dir is None:
            return
        writer_class = _summary_writer_class()
        if writer_class is None:
            print("[hpclab.training] no TensorBoard event files: neither tensorboardX nor tensorboard installed", file=sys.stderr)
            return
        self.writer = writer_class(str(out_dir), flush_secs=10)

    def step(self, global_step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def epoch(self, row: dict[str, Any]) -> None:
        if self.writer is not None:
            for name in EPOCH_SCALARS:
                if row.get(name) is not None:
                    self.writer.add_scalar(f"epoch/{name}", row[name], row["global_step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
