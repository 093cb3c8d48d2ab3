"""The two data-parallel backends behind one interface: Horovod and torch.distributed (DDP).

Which one runs is chosen by ``TrainConfig.backend``; ``auto`` reads the launcher's environment:
``horovodrun`` sets ``HOROVOD_RANK``, ``torchrun`` sets ``RANK``/``WORLD_SIZE``, and ``srun`` sets
``SLURM_PROCID``/``SLURM_NTASKS`` (DDP by default; with backend horovod, rank 0 runs Horovod's gloo rendezvous).
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

        self._rendezvous = _slurm_env_to_horovod(os.environ)
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
        if self._rendezvous is not None:
            self._rendezvous.shutdown()

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


def _slurm_env_to_horovod(env: MutableMapping[str, str]) -> Any:
    """Under ``srun`` without ``horovodrun`` (several nodes with no ssh between them): Horovod's gloo environment from
    SLURM's task variables, and on rank 0 the rendezvous server that ``horovodrun``'s driver would run, on
    ``MASTER_PORT + 1`` of the first node; the other ranks wait until it answers. Returns rank 0's server (else None).

    Ranks are placed as SLURM's default block distribution does (a node's tasks are consecutive ranks)."""
    if "HOROVOD_RANK" in env or "SLURM_PROCID" not in env or int(env.get("SLURM_NTASKS", "1") or 1) < 2:
        return None
    _slurm_env_to_torch(env)  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
    nodes = _node_names(env)
    per_node = _tasks_per_node(env.get("SLURM_TASKS_PER_NODE", ""), len(nodes))
    if sum(per_node) != int(env["WORLD_SIZE"]) or len(set(per_node)) != 1:
        raise RuntimeError(f"Horovod under srun needs the same number of tasks on every node; SLURM gave {per_node}")
    rank, size, local_size = int(env["RANK"]), int(env["WORLD_SIZE"]), per_node[0]
    port = int(env["MASTER_PORT"]) + 1
    env.update(
        HOROVOD_RANK=str(rank),
        HOROVOD_SIZE=str(size),
        HOROVOD_LOCAL_RANK=str(rank % local_size),
        HOROVOD_LOCAL_SIZE=str(local_size),
        HOROVOD_CROSS_RANK=str(rank // local_size),
        HOROVOD_CROSS_SIZE=str(len(nodes)),
        HOROVOD_HOSTNAME=nodes[rank // local_size],
        HOROVOD_GLOO_RENDEZVOUS_ADDR=env["MASTER_ADDR"],
        HOROVOD_GLOO_RENDEZVOUS_PORT=str(port),
        HOROVOD_CONTROLLER="gloo",
        HOROVOD_CPU_OPERATIONS="gloo",
        HOROVOD_GLOO_IFACE=_interface_towards(env["MASTER_ADDR"]),
    )
    if rank == 0:
        return _serve_rendezvous(port, nodes, local_size)
    _wait_for_port(env["MASTER_ADDR"], port, timeout=120)
    return None


def _serve_rendezvous(port: int, nodes: list[str], local_size: int) -> Any:
    """Horovod's gloo rendezvous (its own HTTP key-value store) for this job's ranks, in a thread of rank 0."""
    import threading

    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    size = local_size * len(nodes)
    plan = [
        SlotInfo(
            hostname=node,
            rank=n * local_size + i,
            local_rank=i,
            cross_rank=n,
            size=size,
            local_size=local_size,
            cross_size=len(nodes),
        )
        for n, node in enumerate(nodes)
        for i in range(local_size)
    ]
    server = RendezvousHTTPServer(("", port), RendezvousHandler, 0)
    server.init(plan)
    threading.Thread(target=server.serve_forever, name="horovod-rendezvous", daemon=True).start()
    return server


def _wait_for_port(host: str, port: int, timeout: float) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Horovod's rendezvous on rank 0 ({host}:{port}) did not answer in {timeout:.0f} s") from None
            time.sleep(0.2)


def _tasks_per_node(value: str, nodes: int) -> list[int]:
    """SLURM_TASKS_PER_NODE ('2(x3),1') as one count per node."""
    counts: list[int] = []
    for part in filter(None, value.split(",")):
        count, _, times = part.partition("(x")
        counts += [int(count)] * (int(times.rstrip(")")) if times else 1)
    return counts or [1] * nodes


def _interface_towards(address: str) -> str:
    """The network interface gloo should use: the one whose IPv4 network holds ``address`` (rank 0's node), or the
    loopback for a job on one node."""
    import ipaddress
    import subprocess

    target = ipaddress.ip_address(socket_address(address))
    if target.is_loopback:
        return "lo"
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "inet" and target in ipaddress.ip_interface(fields[3]).network:
            return fields[1]
    raise RuntimeError(f"no network interface of this node reaches {address} (rank 0's node)")


def socket_address(host: str) -> str:
    """``host`` as an IPv4 address (a node name resolved as the nodes resolve it)."""
    import socket

    return socket.gethostbyname(host)


def _node_names(env: Mapping[str, str]) -> list[str]:
    """The job's nodes in SLURM's order (``scontrol show hostnames``)."""
    import subprocess

    if env.get("SLURM_NNODES", "1") == "1":
        return [env.get("SLURMD_NODENAME") or "localhost"]
    out = subprocess.run(
        ["scontrol", "show", "hostnames", env.get("SLURM_JOB_NODELIST", "")], capture_output=True, text=True, check=False
    ).stdout.split()
    if not out:
        raise RuntimeError("Horovod under srun: scontrol did not list the job's nodes")
    return out


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
