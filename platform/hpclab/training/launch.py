"""Run N training processes on this machine (from a notebook or a shell) and stream their progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig

LAUNCHERS = {"horovod": "horovodrun", "ddp": "torchrun", "none": "python"}


class TrainingError(RuntimeError):
    """A training run exited with an error; the message ends with the last lines of its log."""


def local_command(cfg: TrainConfig, nproc: int = 2, backend: str = "horovod", python: str | None = None) -> list[str]:
    """The command that trains ``cfg`` with ``nproc`` local processes.

    horovod: ``horovodrun -np N -H localhost:N --gloo python -m hpclab.training ...``
    ddp:     ``python -m torch.distributed.run --standalone --nproc-per-node=N -m hpclab.training ...``
    none:    ``python -m hpclab.training ...`` (one process)
    ``python`` (default: this interpreter) is the one with torch; horovodrun is taken from its bin/.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if backend not in LAUNCHERS:
        raise ValueError(f"backend must be one of {', '.join(LAUNCHERS)}; got {backend!r}")
    if backend == "none" and nproc != 1:
        raise ValueError("backend 'none' runs one process; use horovod or ddp for nproc > 1")
    python = python or sys.executable
    flags = cfg.replace(backend=backend).to_argv()
    if backend == "horovod":
        horovodrun = str(Path(python).parent / "horovodrun")
        return [horovodrun, "-np", str(nproc), "-H", f"localhost:{nproc}", "--gloo", python, "-m", "hpclab.training", *flags]
    if backend == "ddp":
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "hpclab.training",
            *flags,
        ]
    return [python, "-m", "hpclab.training", *flags]


@dataclass
class TrainingRun:
    """A finished run: its folder, metrics (metrics.json) and how it was started."""

    out_dir: Path
    metrics: dict[str, Any]
    command: list[str] = field(default_factory=list)
    log_path: Path | None = None
    seconds: float | None = None

    @classmethod
    def load(cls, out_dir: str | os.PathLike, **kwargs: Any) -> TrainingRun:
        out = Path(out_dir)
        return cls(out, json.loads((out / "metrics.json").read_text()), **kwargs)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.metrics.get("history", [])

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics.get("final") or (self.history[-1] if self.history else {})

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def plot(self, axes=None):
        """Loss and accuracy per epoch (train and validation) with matplotlib; returns the figure."""
        import matplotlib.pyplot as plt

        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        else:
            fig = axes[0].figure
        from matplotlib.ticker import MaxNLocator

        epochs = [r["epoch"] for r in self.history]
        for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "acc", "accuracy")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.plot(epochs, [r[f"train_{key}"] for r in self.history], "o-", label="train")
            if any(r.get(f"val_{key}") is not None for r in self.history):
                ax.plot(epochs, [r[f"val_{key}"] for r in self.history], "s-", label="validation")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        axes[0].set_yscale("log")  # an early validation loss can be orders of magnitude above the rest
        m = self.metrics
        fig.suptitle(f"{m['config']['arch']} · {m['backend_detail']} · global batch {m['global_batch']}")
        fig.tight_layout()
        return fig

    def load_model(self):
        """The trained torch model (from checkpoint.pt), in eval mode on the CPU."""
        import torch

        from .trainer import build_model

        cfg = self.metrics["config"]
        model = build_model(cfg["arch"], self.metrics["num_classes"], cfg["norm"])
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        return model.eval()


class EventFollower:
    """Reads rank 0's events.jsonl as it grows and shows progress (tqdm bar per epoch and a line per epoch)."""

    def __init__(self, path: Path, offset: int = 0, show: bool = True, echo: Callable[[str], None] = print) -> None:
        self.path, self.offset, self.show, self.echo = path, offset, show, echo
        self.events: list[dict[str, Any]] = []
        self._partial = ""
        self._bar: Any = None  # a tqdm bar while an epoch runs

    def _new_bar(self, total: int, desc: str):
        try:
            import ipywidgets  # noqa: F401  (tqdm.auto needs it for the notebook widget)
            from tqdm.auto import tqdm
        except ImportError:
            from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="step", file=sys.stdout)

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path) as fh:
            fh.seek(self.offset)
            chunk = fh.read()
            self.offset = fh.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next poll
        new = [json.loads(line) for line in lines if line.strip()]
        self.events.extend(new)
        if self.show:
            for event in new:
                self._display(event)
        return new

    def _display(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        if kind == "start":
            self.echo(
                f"{e['arch']} · {e['backend']} × {e['world_size']} on {e['device_name']} · {e['data']} · "
                f"global batch {e['global_batch']}, peak lr {e['peak_lr']:.4g}"
            )
        elif kind == "epoch_start":
            self.close()
            self._bar = self._new_bar(e["steps"], f"epoch {e['epoch']}/{e['epochs']}")
        elif kind == "step":
            if self._bar is None:
                self._bar = self._new_bar(e["steps"], f"epoch {e['epoch']}")
            self._bar.n = e["step"]
            self._bar.set_postfix(loss=f"{e['loss']:.4f}", lr=f"{e['lr']:.3g}", refresh=False)
            self._bar.refresh()
        elif kind == "epoch":
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            val = f" | val loss {e['val_loss']:.4f} acc {e['val_acc']:.4f}" if e.get("val_acc") is not None else ""
            self.echo(
                f"epoch {e['epoch']}: train loss {e['train_loss']:.4f} acc {e['train_acc']:.4f}{val} | "
                f"{e['images_per_s']:,.1f} images/s"
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def launch_local(
    cfg: TrainConfig | None = None,
    nproc: int = 2,
    backend: str = "horovod",
    *,
    python: str | None = None,
    progress: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    poll_seconds: float = 0.5,
    **overrides: Any,
) -> TrainingRun:
    """Train with ``nproc`` processes on this machine and stream rank 0's progress; returns the finished run.

    ``backend``: "horovod" (horovodrun, gloo), "ddp" (torchrun) or "none" (one process). Settings
    come from ``cfg`` and/or keyword overrides (``launch_local(data="digits", epochs=3, nproc=2)``).
    The processes' output goes to ``out_dir/launch.log``; a failure raises TrainingError with its
    tail. Interrupting (the notebook's stop button) ends the processes.
    """
    cfg = (cfg or TrainConfig()).replace(**overrides) if overrides else (cfg or TrainConfig())
    if cfg.progress == "auto":
        cfg = cfg.replace(progress="log")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events_path = out / "events.jsonl"
    offset = events_path.stat().st_size if events_path.exists() else 0
    log_path = out / "launch.log"
    command = local_command(cfg, nproc, backend, python)
    run_env = dict(os.environ if env is None else env)
    run_env["PYTHONUNBUFFERED"] = "1"
    follower = EventFollower(events_path, offset, show=progress)
    started = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=run_env, start_new_session=True)
        try:
            while proc.poll() is None:
                follower.poll()
                if timeout is not None and time.monotonic() - started > timeout:
                    raise TrainingError(f"training did not finish in {timeout} s; last lines of {log_path}:\n" + _tail(log_path))
                time.sleep(poll_seconds)
        except BaseException:
            _stop(proc)
            raise
        finally:
            follower.poll()
            follower.close()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise TrainingError(
            f"{' '.join(command[:6])} ... exited with {proc.returncode}; last lines of {log_path}:\n{_tail(log_path)}"
        )
    return TrainingRun.load(out, command=command, log_path=log_path, seconds=seconds)


def _stop(proc: subprocess.Popen) -> None:
    """End the launcher and the ranks it started (their own process group)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
