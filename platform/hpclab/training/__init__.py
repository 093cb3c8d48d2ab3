"""Data-parallel ResNet training with Horovod or torch.distributed, from a notebook to a SLURM allocation.

``import hpclab.training`` is light: torch is imported only when training starts (``train``) or a
function that needs it is called. The pieces:

- ``TrainConfig``: every setting (also the ``hpclab train resnet`` flags).
- ``train(cfg)``: one process (rank) of a run; under ``horovodrun`` or ``torchrun`` every rank calls it.
- ``launch_local(cfg, nproc=2, backend="horovod")``: start N local processes from a notebook and
  stream their progress; returns a ``TrainingRun`` with the metrics.
- ``SlurmResources``, ``sbatch_script``, ``submit_slurm``, ``follow_slurm``: the same run as a SLURM
  job (``srun`` one task per GPU), and its log followed to the end.
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig
from .launch import TrainingError, TrainingRun, launch_local, local_command
from .schedule import lr_at, peak_lr
from .slurm import SlurmJob, SlurmResources, follow_slurm, sbatch_script, submit_slurm

__all__ = [
    "TrainConfig",
    "train",
    "build_model",
    "launch_local",
    "local_command",
    "TrainingRun",
    "TrainingError",
    "SlurmResources",
    "SlurmJob",
    "sbatch_script",
    "submit_slurm",
    "follow_slurm",
    "peak_lr",
    "lr_at",
    "export_digits_image_folder",
]


def __getattr__(name: str) -> Any:
    # torch-dependent names load on first use, so `import hpclab.training` stays light.
    if name in ("train", "build_model"):
        from . import trainer

        return getattr(trainer, name)
    if name == "export_digits_image_folder":
        from .data import export_digits_image_folder

        return export_digits_image_folder
    raise AttributeError(f"module 'hpclab.training' has no attribute {name!r}")
