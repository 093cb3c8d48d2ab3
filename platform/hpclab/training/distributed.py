"""The two data-parallel backends behind one interface: Horovod and torch.distributed (DDP).

Which one runs is chosen by ``TrainConfig.backend``; ``auto`` reads the launcher's environment:
``horovodrun`` sets ``HOROVOD_RANK``, ``torchrun`` sets ``RANK``/``WORLD_SIZE``, and ``srun`` sets
``SLURM_PROCID``/``SLURM_NTASKS`` (used by DDP; Horovod under srun needs an MPI build).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
import torch.distributed as dist


def environment_backend(env: Mapping[str, str] | None = None) -> str:
    """The backend a launcher's environment implies: horovod, ddp or none."""
    env = os.environ if env is None else env
    if "HOROVOD_RANK" in env:
        return "horovod"
    if "RANK" in env and "WORLD_SIZE" in env:
        return "ddp"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return "ddp"
    return "none"


class Backend:
    """One process: rank 0 of 1."""

    name = "none"
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def setup_device(self, requested: str) -> torch.device:
        if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if requested.startswith("cuda:"):
            device = torch.device(requested)
        else:
            if not torch.cuda.is_available():
                raise RuntimeError("device 'cuda' requested but no CUDA device is available")
            device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device

    def wrap(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device):
        """(model to call, optimizer to step) after the backend has set up gradient averaging."""
        return model, optimizer

    def sync_initial_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, resumed: bool) -> None:
        """Make every rank start from rank 0's weights (and, after a resume, its optimizer state)."""

    def step(self, optimizer, scaler) -> None:
        """``optimizer.step()``, through the GradScaler when there is one (fp16)."""
        if scaler is None:
            optimizer.step()
        else:
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()

    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) so every rank holds one model."""

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def describe(self) -> str:
        return "one process"


class HorovodBackend(Backend):
    """Horovod: ``hvd.DistributedOptimizer`` averages gradients with allreduce (gloo on CPU, NCCL/MPI where built)."""

    name = "horovod"

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()

    def wrap(self, model, optimizer, device):
        hvd = self.hvd
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(), op=hvd.Average)
        return model, optimizer

    def sync_initial_state(self, model, optimizer, resumed):
        hvd = self.hvd
        if resumed:
            # Optimizer state first: on ranks whose optimizer is still empty, Horovod initializes it
            # with a zero-gradient step (which applies weight decay to the weights), so the weights are
            # broadcast after it. A fresh optimizer is empty on every rank and needs no broadcast (and
            # must not get that step, which would change the first update).
            hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def step(self, optimizer, scaler):
        if scaler is None:
            optimizer.step()
            return
        optimizer.synchronize()  # finish the allreduce before unscaling
        scaler.unscale_(optimizer)
        with optimizer.skip_synchronize():
            scaler.step(optimizer)
        scaler.update()

    def _comm(self, tensor: torch.Tensor) -> torch.Tensor:
        # A CPU (gloo) build reduces host tensors only; an NCCL build takes CUDA tensors as they are.
        return tensor if (tensor.is_cuda and self.hvd.nccl_built()) else tensor.cpu()

    def allreduce_sum(self, tensor):
        return self.hvd.allreduce(self._comm(tensor), op=self.hvd.Sum).to(tensor.device)

    def average_buffers(self, model):
        for name, buf in model.named_buffers():
            if buf.is_floating_point():
                buf.copy_(self.hvd.allreduce(self._comm(buf), op=self.hvd.Average, name=f"buffer.{name}"))

    def broadcast_object(self, obj):
        return self.hvd.broadcast_object(obj, root_rank=0)

    def barrier(self):
        self.hvd.allreduce(torch.zeros(1), name="barrier")

    def shutdown(self):
        self.hvd.shutdown()

    def describe(self):
        hvd = self.hvd
        ops = [
            n
            for n, ok in (
                ("gloo", hvd.gloo_built() and hvd.gloo_enabled()),
                ("mpi", hvd.mpi_enabled()),
                ("nccl", hvd.nccl_built()),
            )
            if ok
        ]
        return f"horovod {self.size} processes ({'+'.join(ops) or 'no controller'})"


def _slurm_env_to_torch(env: MutableMapping[str, str]) -> None:
    """Under ``srun`` without torchrun: RANK/WORLD_SIZE/LOCAL_RANK from SLURM's task variables."""
    if "RANK" in env or "SLURM_PROCID" not in env:
        return
    env["RANK"] = env["SLURM_PROCID"]
    env["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    tasks_per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0] or None
    env.setdefault("LOCAL_WORLD_SIZE", tasks_per_node or env.get("SLURM_STEP_NUM_TASKS", env["WORLD_SIZE"]))
    if "MASTER_ADDR" not in env:
        env["MASTER_ADDR"] = "127.0.0.1" if env.get("SLURM_NNODES", "1") == "1" else _first_node(env)
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))


def _first_node(env) -> str:
    """The job's first node (rank 0's), as every task computes it alike: ``scontrol show hostnames``."""
    import subprocess

    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", env.get("SLURM_JOB_NODELIST", "")],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    if not out:
        raise RuntimeError(
            "a multi-node srun run needs MASTER_ADDR (rank 0's node); "
            "sbatch_script() exports it, or export it in your batch script"
        )
    return out[0]


class DDPBackend(Backend):
    """torch.distributed: ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA), env:// rendezvous."""

    name = "ddp"

    def __init__(self, device_request: str) -> None:
        _slurm_env_to_torch(os.environ)
        self.rank = int(os.environ.get("RANK", "0"))
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.size)))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        use_cuda = device_request != "cpu" and torch.cuda.is_available()
        self.pg_backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            kwargs: dict[str, Any] = {}
            if use_cuda:
                kwargs["device_id"] = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            dist.init_process_group(
                self.pg_backend,
                init_method="env://",
                rank=self.rank,
                world_size=self.size,
                timeout=_dt.timedelta(minutes=10),
                **kwargs,
            )

    def wrap(self, model, optimizer, device):
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # DDP broadcasts rank 0's parameters and buffers when it is built.
        ddp = DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
        return ddp, optimizer

    def sync_initial_state(self, model, optimizer, resumed):
        if resumed:
            state = self.broadcast_object(optimizer.state_dict() if self.rank == 0 else None)
            optimizer.load_state_dict(state)

    def allreduce_sum(self, tensor):
        # NCCL reduces CUDA tensors only, gloo CPU tensors only.
        home = tensor.device
        work = tensor.to(torch.device("cuda", torch.cuda.current_device()) if self.pg_backend == "nccl" else "cpu")
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        return work.to(home)

    def average_buffers(self, model):
        for buf in model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(self.size)

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        dist.barrier()

    def shutdown(self):
        if dist.is_initialized():
            dist.destroy_process_group()

    def describe(self):
        return f"torch.distributed DDP {self.size} processes ({self.pg_backend})"


def make_backend(name: str, device_request: str = "auto") -> Backend:
    """The Backend for ``name`` (``auto`` reads the launcher's environment)."""
    if name == "auto":
        name = environment_backend()
    if name == "horovod":
        try:
            return HorovodBackend()
        except ImportError as exc:
            raise RuntimeError(
                "backend 'horovod' needs Horovod in this environment "
                "(images/dl/install-dl-env.sh builds it); use --backend ddp otherwise"
            ) from exc
    if name == "ddp":
        return DDPBackend(device_request)
    if name == "none":
        return Backend()
    raise ValueError(f"unknown backend {name!r}")
