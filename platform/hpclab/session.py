"""What this kernel/process may use: cores, memory, GPUs and time left in the job."""

from __future__ import annotations

import datetime as _dt
import html
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cgroup import ABSURD_LIMIT, cgroup_memory_limit
from .formatting import format_bytes, format_cpu_ids, format_timedelta
from .slurm import parse_slurm_mem_mb, squeue_time_left

#: End times further away than this are treated as "no limit".
_FAR_FUTURE = 100 * 365 * 86400


@dataclass(frozen=True)
class Session:
    """A snapshot of the resources this process may use (see ``hpclab.session()``)."""

    cores: int
    cores_source: str
    cpu_ids: tuple[int, ...]
    memory_limit: int | None
    memory_source: str | None
    gpus: tuple[str, ...]
    walltime_left: _dt.timedelta | None
    walltime_source: str | None
    job_id: str | None
    backend: str
    hostname: str
    disk_limit: int | None = None  # bytes the home may hold (quotas.disk, enforced by the kernel)
    disk_used: int | None = None  # bytes the home holds now, as the quota counts them

    @property
    def disk_left(self) -> int | None:
        """Bytes the home may still take before writes fail with 'Disk quota exceeded' (None without a quota)."""
        if self.disk_limit is None or self.disk_used is None:
            return None
        return max(0, self.disk_limit - self.disk_used)

    # -- views ---------------------------------------------------------------
    def _cores_note(self) -> str:
        """E.g. "affinity 0-3" or "SLURM_CPUS_PER_TASK; affinity 0-3"."""
        if not self.cpu_ids:
            return self.cores_source
        sep = " " if self.cores_source.startswith("affinity") else "; affinity "
        return self.cores_source + sep + format_cpu_ids(self.cpu_ids)

    def _rows(self) -> list[tuple[str, str, str]]:
        """(label, value, where it came from) for the terminal and HTML views."""
        return [
            ("host", self.hostname, f"backend {self.backend}"),
            ("job", self.job_id or "none", "SLURM_JOB_ID" if self.job_id else ""),
            ("cores", str(self.cores), self._cores_note()),
            ("memory", format_bytes(self.memory_limit), self.memory_source or ""),
            ("gpus", ",".join(self.gpus) or "none", "CUDA_VISIBLE_DEVICES" if self.gpus else ""),
            ("walltime left", format_timedelta(self.walltime_left), self.walltime_source or ""),
        ] + self._disk_rows()

    def _disk_rows(self) -> list[tuple[str, str, str]]:
        if self.disk_limit is None:
            return []
        used = format_bytes(self.disk_used) if self.disk_used is not None else "unknown"
        left = f", {format_bytes(self.disk_left)} left" if self.disk_left is not None else ""
        return [("home disk", f"{used} of {format_bytes(self.disk_limit)}{left}", "quota")]

    def __repr__(self) -> str:
        return (
            f"Session(cores={self.cores} [{self._rows()[2][2]}], memory={format_bytes(self.memory_limit)}, "
            f"gpus={','.join(self.gpus) or 'none'}, job={self.job_id or 'none'}, "
            f"walltime_left={format_timedelta(self.walltime_left)}, host={self.hostname})"
        )

    def __str__(self) -> str:
        rows = self._rows()
        width = max(len(label) for label, _, _ in rows)
        vwidth = max(len(value) for _, value, _ in rows)
        lines = []
        for label, value, note in rows:
            line = f"{label:<{width}}  {value:<{vwidth}}"
            if note:
                line += f"  ({note})"
            lines.append(line.rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'>{html.escape(value)}</td>"
            f"<td style='text-align:left;color:#777'>{html.escape(note)}</td></tr>"
            for label, value, note in self._rows()
        )
        return f"<table class='hpclab-session'><caption>hpclab session</caption>{cells}</table>"

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (sequences as lists; walltime_left stays a timedelta)."""
        return {
            "job_id": self.job_id,
            "backend": self.backend,
            "hostname": self.hostname,
            "cores": self.cores,
            "cores_source": self.cores_source,
            "cpu_ids": list(self.cpu_ids),
            "memory_limit": self.memory_limit,
            "memory_source": self.memory_source,
            "gpus": list(self.gpus),
            "walltime_left": self.walltime_left,
            "walltime_source": self.walltime_source,
            "disk_limit": self.disk_limit,
            "disk_used": self.disk_used,
        }


# -- detection ---------------------------------------------------------------
def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return []


def allocated_cores(env: Mapping[str, str] | None = None, cpu_ids: Sequence[int] | None = None) -> tuple[int, str]:
    """(cores, where from): SLURM_CPUS_PER_TASK, never more than the CPU affinity; else the affinity; else cpu_count.

    The one rule behind ``hpclab.session().cores`` and the kernel launcher's thread counts: a job
    step pinned to fewer CPUs than it asked for must not start more threads than it can run.
    """
    env = os.environ if env is None else env
    cpu_ids = list(_affinity() if cpu_ids is None else cpu_ids)
    slurm = _positive_int(env.get("SLURM_CPUS_PER_TASK"))
    if slurm is not None:
        if cpu_ids and len(cpu_ids) < slurm:
            return len(cpu_ids), f"affinity ({len(cpu_ids)} < SLURM_CPUS_PER_TASK={slurm})"
        return slurm, "SLURM_CPUS_PER_TASK"
    if cpu_ids:
        return len(cpu_ids), "affinity"
    return os.cpu_count() or 1, "cpu_count"


def _rlimit(name: str) -> int | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _hard = resource.getrlimit(getattr(resource, name))
    if soft == resource.RLIM_INFINITY or soft < 0 or soft >= ABSURD_LIMIT:
        return None
    return soft


def _memory(env: Mapping[str, str], cores: int) -> tuple[int | None, str | None]:
    """The tightest memory limit; ``cores`` is the job's CPU count (SLURM_MEM_PER_CPU is per allocated CPU)."""
    candidates: list[tuple[int, str]] = []
    cg = cgroup_memory_limit()
    if cg is not None:
        candidates.append(cg)
    per_node = parse_slurm_mem_mb(env.get("SLURM_MEM_PER_NODE", ""))
    if per_node is not None:
        candidates.append((per_node, "SLURM_MEM_PER_NODE"))
    per_cpu = parse_slurm_mem_mb(env.get("SLURM_MEM_PER_CPU", ""))
    if per_cpu is not None:
        candidates.append((per_cpu * cores, "SLURM_MEM_PER_CPU"))
    for name in ("RLIMIT_DATA", "RLIMIT_AS"):
        limit = _rlimit(name)
        if limit is not None:
            candidates.append((limit, name))
    mem_limit = _positive_int(env.get("MEM_LIMIT"))
    if mem_limit is not None:
        candidates.append((mem_limit, "MEM_LIMIT"))
    if not candidates:
        return None, None
    return min(candidates, key=lambda c: c[0])  # first listed wins ties


def _gpus(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if raw in ("", "NoDevFiles", "-1"):
        return ()
    gpus: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if item == "-1":  # CUDA ignores this entry and everything after it
            break
        if item:
            gpus.append(item)
    return tuple(gpus)


def _seconds_until(epoch_text: str | None, now: float) -> _dt.timedelta | None:
    try:
        end = float(str(epoch_text).strip())
    except ValueError:
        return None
    if end <= 0 or end - now > _FAR_FUTURE:
        return None
    return _dt.timedelta(seconds=max(0, int(end - now)))


def _read_end_file(path: str | None) -> str | None:
    """The end (epoch seconds, as text) the server's hpclab.walltime keeps for its kernels; None if absent."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def walltime_left(env: Mapping[str, str], job_id: str | None) -> tuple[_dt.timedelta | None, str | None]:
    """Time left in the job and where that came from (SLURM_JOB_END_TIME, squeue, HPCLAB_JOB_END_TIME)."""
    now = time.time()
    candidates: list[tuple[_dt.timedelta, str]] = []
    live = squeue_time_left(job_id) if job_id else None  # follows an extension; SLURM_JOB_END_TIME does not
    if live is not None:
        candidates.append((live, "squeue"))
    elif "SLURM_JOB_END_TIME" in env:
        left = _seconds_until(env["SLURM_JOB_END_TIME"], now)
        if left is not None:
            candidates.append((left, "SLURM_JOB_END_TIME"))
    end_file = _read_end_file(env.get("HPCLAB_JOB_END_FILE"))
    if end_file is not None and end_file != env.get("HPCLAB_JOB_END_TIME", "").strip():
        left = _seconds_until(end_file, now)  # the server's latest word from the hub: the end moved (extended)
        if left is not None:
            candidates.append((left, "hub"))
    elif "HPCLAB_JOB_END_TIME" in env:
        left = _seconds_until(env["HPCLAB_JOB_END_TIME"], now)
        if left is not None:
            candidates.append((left, "HPCLAB_JOB_END_TIME"))
    if not candidates:
        return None, None
    return min(candidates, key=lambda c: c[0])


def session(env: Mapping[str, str] | None = None) -> Session:
    """Describe what this process may use right now (cores, memory, GPUs, time left).

    Reads the environment (SLURM and spawner variables), CPU affinity, cgroups and
    rlimits; *env* defaults to ``os.environ``. Values are a snapshot taken at call time.
    """
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID") or None
    cpu_ids = _affinity()
    cores, cores_source = allocated_cores(env, cpu_ids)
    memory_limit, memory_source = _memory(env, _positive_int(env.get("SLURM_CPUS_PER_TASK")) or cores)
    time_left, walltime_source = walltime_left(env, job_id)
    return Session(
        cores=cores,
        cores_source=cores_source,
        cpu_ids=tuple(cpu_ids),
        memory_limit=memory_limit,
        memory_source=memory_source,
        gpus=_gpus(env),
        walltime_left=time_left,
        walltime_source=walltime_source,
        job_id=job_id,
        backend="slurm" if job_id else "local",
        hostname=socket.gethostname(),
        disk_limit=_positive_int(env.get("HPCLAB_DISK_LIMIT")),
        disk_used=_disk_used(env) if env.get("HPCLAB_DISK_LIMIT") else None,
    )


def _disk_used(env: Mapping[str, str]) -> int | None:
    """Bytes the home's quota counts now: a btrfs qgroup's sysfs file, or the user quota as `quota` reports it."""
    used_file = env.get("HPCLAB_DISK_USED_FILE")
    if used_file:
        try:
            with open(used_file, encoding="ascii") as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None
    device = env.get("HPCLAB_DISK_QUOTA_DEVICE")
    if not device:
        return None
    import subprocess

    try:  # `quota -w -p`: one line per file system, the device first, then 1 KiB blocks used (a * when over)
        out = subprocess.run(["quota", "-u", "-w", "-p", "-v"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == device:
            try:
                return int(fields[1].rstrip("*")) * 1024
            except ValueError:
                return None
    return None


def memory_limit(env: Mapping[str, str] | None = None) -> tuple[int | None, str | None]:
    """(bytes, where from) of :func:`session`'s memory limit, without its time-left probe (no squeue call)."""
    env = os.environ if env is None else env
    cores, _ = allocated_cores(env, _affinity())
    return _memory(env, _positive_int(env.get("SLURM_CPUS_PER_TASK")) or cores)


def available_memory(env: Mapping[str, str] | None = None) -> int | None:
    """Bytes this process can still allocate: the tightest limit (job, cgroup, rlimit) or the host's MemAvailable.

    Cheaper than :func:`session` (no squeue call); used to refuse work that cannot fit before it starts.
    """
    env = os.environ if env is None else env
    cores, _ = allocated_cores(env, _affinity())
    limit, _ = _memory(env, _positive_int(env.get("SLURM_CPUS_PER_TASK")) or cores)
    known = [v for v in (limit, _mem_available()) if v is not None]
    return min(known) if known else None


def _mem_available() -> int | None:
    """The host's MemAvailable in bytes (None where /proc/meminfo is not there)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
