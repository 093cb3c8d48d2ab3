"""The data-parallel training loop behind ``hpclab train resnet`` (one process of a run; any backend)."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..safe_output import atomic_output
from ..session import allocated_cores
from .config import TrainConfig
from .data import build_data
from .distributed import Backend, make_backend
from .schedule import lr_at, peak_lr
from .tensorboard import EventWriter

RESNET_FAMILY = ("resnet", "resnext", "wide_resnet")
METRIC_FIELDS = (
    "epoch",
    "global_step",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "images_per_s",
    "epoch_seconds",
    "train_images",
)


def build_model(arch: str, num_classes: int, norm: str = "batch") -> nn.Module:
    """A torchvision classification model, randomly initialized, with ``num_classes`` outputs.

    ``norm`` swaps the normalization layers of a resnet: ``group`` (GroupNorm, per sample, so a
    data-parallel step equals one step on the whole global batch) or ``none``.
    """
    import torchvision

    kwargs: dict[str, Any] = {}
    if norm != "batch":
        if not arch.startswith(RESNET_FAMILY):
            raise ValueError(f"norm={norm!r} is only available for resnet-family models, not {arch!r}")
        kwargs["norm_layer"] = (lambda c: nn.GroupNorm(math.gcd(32, c), c)) if norm == "group" else nn.Identity
    try:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    except ValueError as exc:
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
        raise ValueError(f"unknown torchvision model {arch!r} (e.g. {known}, ...)") from exc


def _threads(
    cfg: TrainConfig, backend: Backend, env: Mapping[str, str] | None = None, cpu_ids: Sequence[int] | None = None
) -> int:
    """Torch threads of this rank: ``cfg.threads``, else the cores of :func:`hpclab.session.allocated_cores`.

    SLURM_CPUS_PER_TASK (and the affinity that caps it) is already this task's share: srun starts one
    task per rank. The affinity or cpu_count of a process started otherwise (torchrun, horovodrun, the
    local launcher) is shared by the node's ranks, so each takes its part.
    """
    if cfg.threads:
        return cfg.threads
    cores, source = allocated_cores(env, cpu_ids)
    if "SLURM_CPUS_PER_TASK" in source:
        return max(1, cores)
    return max(1, cores // max(1, backend.local_size))


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    mode = cfg.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp16" if device.type == "cuda" else "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


class _Events:
    """Rank 0's progress as JSON lines in out_dir/events.jsonl (what launch_local and follow read)."""

    def __init__(self, path: Path | None) -> None:
        self.file = open(path, "a", buffering=1) if path else None

    def __call__(self, event: str, **fields: Any) -> None:
        if self.file:
            self.file.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")

    def close(self) -> None:
        if self.file:
            self.file.close()


def _write_metrics(out: Path, history: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    with atomic_output(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k) for k in METRIC_FIELDS})
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({**summary, "history": history}, indent=2) + "\n")


def _save_checkpoint(path: Path, **state: Any) -> None:
    """torch.save beside ``path`` and rename: a kill mid-save keeps the previous epoch's checkpoint."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _evaluate(model, loader, device, amp_dtype, memory_format, backend: Backend, criterion) -> tuple[float, float]:
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(x)
            sums[0] += criterion(out.float(), y).double() * len(y)
            sums[1] += (out.argmax(1) == y).sum()
            sums[2] += len(y)
    sums = backend.allreduce_sum(sums.cpu())
    loss_sum, correct, count = sums.tolist()
    return (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))


def train(cfg: TrainConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``cfg.data`` in this process, as one rank of the launcher's run.

    Every rank returns the same summary (metrics are all-reduced); rank 0 also writes
    ``checkpoint.pt``, ``metrics.csv``, ``metrics.json`` and ``events.jsonl`` under ``cfg.out_dir``.
    """
    cfg = (cfg or TrainConfig()).replace(**overrides) if overrides else (cfg or TrainConfig())
    backend = make_backend(cfg.backend, cfg.device)
    try:
        return _train(cfg, backend)
    finally:
        backend.shutdown()


def _train(cfg: TrainConfig, backend: Backend) -> dict[str, Any]:
    rank0 = backend.rank == 0
    torch.set_num_threads(_threads(cfg, backend))
    device = backend.setup_device(cfg.device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    amp_dtype = _amp_dtype(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data = build_data(cfg.replace(channels_last=channels_last), backend.rank, backend.size, device)
    steps_per_epoch = len(data.train)
    if steps_per_epoch < 1:
        raise ValueError(f"{data.description}: too few images for one step of {cfg.batch_size} x {backend.size}")
    global_batch = cfg.batch_size * backend.size
    peak = peak_lr(cfg.lr, global_batch, cfg.lr_reference_batch, cfg.lr_scaling)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    torch.manual_seed(cfg.seed)
    # Module.to takes memory_format (documented); torch's overloads leave it out
    raw_model = build_model(cfg.arch, data.num_classes, cfg.norm).to(device, memory_format=memory_format)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(raw_model.parameters(), lr=peak, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
    # Resume: rank 0 reads the checkpoint; the backend hands its weights and optimizer state to the rest.
    meta = {"resumed": False, "epoch": 0, "global_step": 0, "history": []}
    ckpt = None
    if rank0 and cfg.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        raw_model.load_state_dict(ckpt["model"])
        meta = {"resumed": True, "epoch": ckpt["epoch"], "global_step": ckpt["global_step"], "history": ckpt["history"]}
    meta = backend.broadcast_object(meta)
    model, optimizer = backend.wrap(raw_model, optimizer, device)
    if ckpt is not None:
        # After wrapping: hvd.DistributedOptimizer is a new optimizer built from the param groups.
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        del ckpt
    backend.sync_initial_state(raw_model, optimizer, meta["resumed"])
    if cfg.compile:
        model = torch.compile(model)

    history: list[dict[str, Any]] = list(meta["history"])
    start_epoch, global_step = meta["epoch"], meta["global_step"]
    summary: dict[str, Any] = {
        "config": cfg.as_dict(),
        "backend": backend.name,
        "backend_detail": backend.describe(),
        "world_size": backend.size,
        "device": str(device) if backend.size == 1 else device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "channels_last": channels_last,
        "threads_per_process": torch.get_num_threads(),
        "data": data.description,
        "num_classes": data.num_classes,
        "global_batch": global_batch,
        "peak_lr": peak,
        "steps_per_epoch": steps_per_epoch,
        "warmup_steps": warmup_steps,
        "resumed_from_epoch": start_epoch if meta["resumed"] else None,
        "torch": torch.__version__,
    }
    events = _Events(out / "events.jsonl" if rank0 else None)
    board = EventWriter(out if rank0 else None)  # TensorBoard event files beside the metrics
    progress = cfg.progress if cfg.progress != "auto" else ("bar" if sys.stderr.isatty() else "log")
    say = (lambda text: print(text, flush=True)) if rank0 and progress != "off" else (lambda text: None)
    say(
        f"[hpclab.training] {cfg.arch} on {data.description}; {backend.describe()} on {summary['device_name']}; "
        f"global batch {global_batch} ({cfg.batch_size}/process), peak lr {peak:.4g}, amp {summary['amp']}, "
        f"channels_last {channels_last}" + (f"; resumed after epoch {start_epoch}" if meta["resumed"] else "")
    )
    events(
        "start",
        **{
            k: summary[k]
            for k in ("backend", "world_size", "data", "global_batch", "peak_lr", "steps_per_epoch", "device_name", "amp")
        },
        epochs=cfg.epochs,
        start_epoch=start_epoch + 1,
        arch=cfg.arch,
    )

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        data.train.set_epoch(epoch)
        model.train()
        events("epoch_start", epoch=epoch, epochs=cfg.epochs, steps=steps_per_epoch)
        bar = None
        if rank0 and progress == "bar":
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=True)
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        skip = cfg.timing_skip_steps if steps_per_epoch > cfg.timing_skip_steps else 0
        t_epoch = t_window = time.perf_counter()
        lr = peak
        for i, (x, y) in enumerate(data.train):
            if i == skip:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t_window = time.perf_counter()
            lr = lr_at(global_step, total_steps, peak, warmup_steps, cfg.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad()  # set_to_none by default (Horovod's wrapper takes no arguments)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x)
                loss = criterion(logits, y)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            backend.step(optimizer, scaler)
            global_step += 1
            with torch.no_grad():
                sums[0] += loss.detach().double() * len(y)
                sums[1] += (logits.argmax(1) == y).sum()
                sums[2] += len(y)
            if bar is not None:
                bar.update(1)
            if rank0 and ((i + 1) % cfg.log_every == 0 or i + 1 == steps_per_epoch):
                loss_now = float(loss.detach())
                events("step", epoch=epoch, step=i + 1, steps=steps_per_epoch, global_step=global_step, loss=loss_now, lr=lr)
                board.step(global_step, loss_now, lr)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_now:.4f}", lr=f"{lr:.3g}")
                elif progress == "log":
                    say(f"  epoch {epoch} step {i + 1}/{steps_per_epoch}  loss {loss_now:.4f}  lr {lr:.4g}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_end = time.perf_counter()
        if bar is not None:
            bar.close()
        timed_images = (steps_per_epoch - skip) * global_batch
        images_per_s = timed_images / max(t_end - t_window, 1e-9)

        totals = backend.allreduce_sum(sums.cpu()).tolist()
        backend.average_buffers(raw_model)
        val_loss = val_acc = None
        if data.val is not None:
            val_loss, val_acc = _evaluate(raw_model, data.val, device, amp_dtype, memory_format, backend, criterion)
        row = {
            "epoch": epoch,
            "global_step": global_step,
            "lr": lr,
            "train_loss": totals[0] / totals[2],
            "train_acc": totals[1] / totals[2],
            "val_loss": val_loss,
            "val_acc": val_acc,
            "images_per_s": images_per_s,
            "epoch_seconds": t_end - t_epoch,
            "train_images": int(totals[2]),
        }
        history.append(row)
        say(
            f"epoch {epoch}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
            + (f" | val loss {val_loss:.4f} acc {val_acc:.4f}" if val_acc is not None else "")
            + f" | {images_per_s:,.1f} images/s | {row['epoch_seconds']:.1f} s"
        )
        events("epoch", **row)
        board.epoch(row)
        if rank0:
            if cfg.checkpoint:
                _save_checkpoint(
                    ckpt_path,
                    model=raw_model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else None,
                    epoch=epoch,
                    global_step=global_step,
                    history=history,
                    config=cfg.as_dict(),
                )
            _write_metrics(out, history, summary)

    if cfg.save_rank_states:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in raw_model.state_dict().items()}, out / f"rank{backend.rank}.pt")
    summary["history"] = history
    if history:
        summary["final"] = history[-1]
        vals = [r["val_acc"] for r in history if r["val_acc"] is not None]
        summary["best_val_acc"] = max(vals) if vals else None
    if rank0:
        _write_metrics(out, history, {k: v for k, v in summary.items() if k != "history"})
    events("end", final=summary.get("final"), best_val_acc=summary.get("best_val_acc"))
    events.close()
    board.close()
    backend.barrier()
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m hpclab.training [flags]``: one rank of a run (flags as in ``hpclab train resnet``).

    Launchers stop their ranks with SIGTERM (horovodrun, torchrun, ``scancel``): it is turned into an
    exception, so a checkpoint being written keeps the previous one and leaves no temporary file, and
    the rank exits with 128 + the signal's number after one line on stderr.
    """
    from ..interrupts import Interrupted, signals_raise
    from .config import parse_argv

    cfg = parse_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        with signals_raise():
            train(cfg)
    except Interrupted as stop:
        rank = next((os.environ[k] for k in ("HOROVOD_RANK", "RANK", "SLURM_PROCID") if k in os.environ), "0")
        print(f"hpclab.training: rank {rank} stopped by {stop}", file=sys.stderr, flush=True)
        return stop.exit_status
    return 0
