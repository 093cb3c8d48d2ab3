"""Where a server runs: the protocol every backend implements, and what a backend may ask of its server.

A backend is one object per server (``LocalServer``: a process on this machine; ``SlurmServer``: a
job on a cluster), made by the spawner from the backend its profile names. The spawner keeps what
every server has (profile, choices, wall time, the form) and hands start, stop, poll, progress,
environment and the backend's own saved state to that object; the pages (home, admin, history) ask it
what they show. A third backend (PBS, Kubernetes): docs/design.md, "A third backend".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # annotations only: the local backend's cgroup code imports without yaml and pydantic (the v2 guest)
    from hpclab_hub.config.model import Deployment, Profile


@dataclass(frozen=True)
class Availability:
    """One profile's live state: ``note`` (what is free now) and ``blocked`` (why it cannot start; '' if it can)."""

    note: str = ""
    blocked: str = ""


@dataclass(frozen=True)
class Refusals:
    """Why a start cannot go ahead on its backend, asked before anything is held or submitted ('' where it can)."""

    blocked: str = ""  # the profile can never start there (the form's rule for disabled profiles)
    too_long: str = ""  # its wall time is above the cluster's cap
    cap_seconds: int = 0  # the cluster's cap on the wall time (0: none), kept for extensions
    cap_source: str = ""  # what sets it, e.g. "QoS debug's MaxWall"


@dataclass(frozen=True)
class Launch:
    """What the hub hands a backend to start a server: its command line and the hub's and profile's variables.

    The backend builds the server's whole environment from these (``ServerBackend.environment``) once
    it knows what only it can know: the account, the cores and GPUs, the job.
    """

    command: list[str]
    hub_env: dict[str, str]  # JupyterHub's (API token, URLs) and the variables the hub keeps
    profile_env: dict[str, str]  # the YAML's for this profile, and HPCLab's own (wall time, examples, culling)
    ip: str
    port: int  # the hub's choice where the backend lets the hub pick (0: the server reports its own)


@dataclass(frozen=True)
class Whereabouts:
    """Where a server runs, as the admins' page shows it ('' where the backend has nothing to say)."""

    job: str = ""  # its id on the backend: SLURM's job id, "pid 1234"
    node: str = ""  # the host it runs on
    gpus: str = ""  # the GPUs it holds, e.g. "0, 1"
    note: str = ""  # what it is doing now: SLURM's words while it starts, a reclaim warning, its place in a line
    place: int = 0  # its place in its backend's own line of waiting starts (0: not in one)
    priority: str = ""  # its priority in that line


@dataclass(frozen=True)
class ServerUse:
    """What a running server uses, as its backend measures it; ``note`` says why there are no figures."""

    cpu_seconds: float = 0.0
    memory: int = 0  # bytes in use now (0: not measured)
    peak_memory: int = 0  # bytes at most so far (0: not measured)
    measured_at: float = 0.0  # time.monotonic() of the measurement
    note: str = ""


def plural(count: int, noun: str) -> str:
    """'1 core', '2 cores'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class ServerContext(Protocol):
    """What a backend may ask of the server it runs (HPCLabSpawner provides it): who, which profile, the clock, the log."""

    log: Any
    name: str  # the server's name ('' for the default server)
    profile_slug: str  # the profile of the current or last start ('' if none)
    job_end_epoch: float  # when the wall time runs out (0: no limit)
    end_reason: str  # why the server ended on its own, for the home page
    http_timeout: int

    @property
    def user_name(self) -> str: ...
    @property
    def log_name(self) -> str: ...
    @property
    def deployment(self) -> Deployment: ...
    @property
    def profile(self) -> Profile: ...
    @property
    def database(self) -> Any: ...  # the hub's database session (SLURM: the hub's id, jobs the hub owns)

    def user_groups(self) -> frozenset[str]: ...
    async def cluster_state(self, backend_name: str) -> Any: ...  # a SLURM backend's partitions now, or SLURM's message
    def start_wall_clock(self) -> None: ...
    def walltime_limits(self) -> tuple[int | None, int | None]: ...
    def record_failure(self, reason: str) -> None: ...
    def start_metrics(self) -> None: ...


class ServerBackend(Protocol):
    """One server on one backend: what the spawner delegates to."""

    kind: ClassVar[str]  # the YAML's backends.<name>.type
    label: ClassVar[str]  # where its servers run, in words for the home page: "this server", "SLURM cluster"
    id_key: ClassVar[str]  # the key of the server's id in its state ("pid", "job_id"): events and history name it
    picks_port: ClassVar[bool]  # True: the hub chooses the port; False: the server reports the one it got

    def __init__(self, ctx: ServerContext) -> None: ...

    def get_state(self) -> dict[str, Any]: ...
    def load_state(self, state: dict[str, Any]) -> None: ...
    def clear_state(self) -> None: ...
    def holds_server(self) -> bool: ...  # a process or job is recorded (running, or to be checked after a restart)
    def environment(self, hub_env: dict[str, str], profile_env: dict[str, str]) -> dict[str, str]: ...
    async def refusals(self, profile: Profile) -> Refusals: ...
    async def start(self, launch: Launch) -> tuple[str, int]: ...
    async def poll(self) -> int | None: ...
    async def stop(self, now: bool = False) -> None: ...
    def progress(self) -> AsyncIterator[dict[str, Any]]: ...
    async def extend(self, seconds: int) -> None: ...
    def running_note(self) -> str: ...  # e.g. "SLURM job 12" on the home page ('' for none)
    async def availability(self, profiles: list[Profile]) -> dict[str, Availability]: ...  # the form's, by slug
    async def whereabouts(self) -> Whereabouts: ...  # the admins' page
    @classmethod
    async def measure(cls, servers: list[Any]) -> list[ServerUse]: ...  # running servers of this class, at once
    async def settle(self, engine: Any, row_id: int, job_id: str) -> None: ...  # the history row, after the end
    def home(self) -> str: ...  # the account's home, where internal_ssl's certificates go
    async def cert_alt_names(self) -> list[str]: ...  # hosts a server's certificate must name besides localhost
