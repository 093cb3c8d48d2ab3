"""The deploy YAML's ``backends`` section: a local backend (this machine's cores, GPUs, memory, accounts) or a SLURM cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StrictStr, ValidationInfo, field_validator

from hpclab_hub.config.fields import Int, NonNegativeInt, Strict, _resolve
from hpclab_hub.config.units import MemoryBytes


class LocalAccounts(Strict):
    """Which Unix account runs each person's server on a local backend (the hub switches to it as root)."""

    mode: Literal["create", "existing", "hub-user", "auto"] = Field(
        "create",
        description="create: the hub makes an account <prefix><name> on first start (no password, no login shell); "
        "existing: the account of the same name must exist (LDAP/PAM sites). Accounts below UID_MIN are never used. "
        "hub-user: a one-person trial for a hub without root: the first of hub.admin_users runs servers as the hub's own "
        "account (home_dir default ~/hpclab-trial), every other login is refused with the reason; never as root. "
        "auto: create when the hub runs as root, hub-user otherwise (the embedded default).",
    )
    prefix: StrictStr = Field(
        "jupyter-",
        pattern=r"^[a-z_][a-z0-9_-]*$",
        max_length=16,
        description="Prefix of created account names (mode create); never empty, so a sign-up cannot name a daemon's account.",
    )
    home_base: Path = Field(Path("/home"), description="Created accounts' homes are home_base/<account> (mode create).")

    @field_validator("home_base")
    @classmethod
    def _absolute(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class LocalBackend(Strict):
    """Single-user servers as processes on the hub's own machine (teaching or GPU server)."""

    type: Literal["local"] = Field(description="Backend kind: local (this machine).")
    cpus: Literal["auto"] | list[NonNegativeInt] = Field(
        "auto", description="CPU ids shared out to servers; 'auto' = the hub's own CPU affinity."
    )
    gpus: Literal["auto"] | list[StrictStr | NonNegativeInt] = Field(
        "auto", description="GPU ids handed out exclusively; 'auto' = ask nvidia-smi (none if absent)."
    )
    memory: Literal["auto"] | MemoryBytes = Field(
        "auto",
        description="Memory shared out to servers: their memory limits together never exceed it; a start that does not "
        "fit is refused with what is in use. 'auto' = the machine's memory less memory_reserved.",
    )
    memory_reserved: MemoryBytes = Field(
        "1G",
        validate_default=True,
        description="With memory: auto, what is kept back for the hub, its proxy and the system (e.g. 2G).",
    )
    gpu_devices: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="GPU id -> its device node, for ids whose node is not /dev/nvidia<id>; "
        "a server may open only its own GPUs' nodes.",
    )
    accounts: LocalAccounts = Field(
        default_factory=dict, validate_default=True, description="The Unix account each person's server runs as."
    )
    home_dir: StrictStr | None = Field(
        None,
        description="Working folder of each server ({username}, {account}); default: the account's home. "
        "Never inside hub.data_dir.",
    )
    limits: Literal["auto", "cgroups", "best-effort"] = Field(
        "auto",
        description="cgroups: the kernel enforces memory (all processes together), cores, processes and GPUs per server, and "
        "stopping a server kills all it started; best-effort: CPU affinity and a per-process RLIMIT_DATA only; "
        "auto: cgroups when the hub runs as root.",
    )
    pids_limit: Int | None = Field(
        4096, ge=16, description="Most processes and threads one server may have at once (cgroups); null = no limit."
    )
    server_nice: Int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority of the servers below the hub's, as a niceness (0-19): every server process runs at it "
        "and, with cgroups, all servers together weigh what one process at it would; the hub and its proxy keep the CPU "
        "they need while servers compute or start in a burst. Users cannot lower it. 0 = the servers together weigh as "
        "much as the hub.",
    )
    zygote: bool | Literal["spare"] = Field(
        False,
        description="Servers from a process that has imported the server already (about 1.4 s less per start). spare: "
        "that process becomes the one server itself, with the same cgroup, private mounts, account and environment as a "
        "fresh start, and the next is started at once, so servers share nothing; true: one process forks a child per "
        "start (quicker in bursts; children share its memory layout); false: every server a fresh process "
        '(docs/admin-guide.md, "Faster starts: the zygote"). Not with singleuser_cmd.',
    )
    singleuser_cmd: list[StrictStr] | None = Field(
        None,
        description="Command that starts the server; default the hub's Python running its jupyterhub-singleuser "
        "without import-time work it never uses (python -m hpclab_hub.deferred_imports jupyterhub-singleuser).",
    )
    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Extra environment for every server.")
    poll_interval: int = Field(
        10, ge=1, le=600, description="Seconds between checks of each server (exited? wall time over? early signal due?)."
    )
    private_tmp: bool = Field(
        True,
        description="Each server (hub as root) gets its own /tmp, /var/tmp and /dev/shm: a fresh tmpfs in its own mount "
        "namespace, at most the profile's memory, counted against the server's memory limit and gone when the server "
        "stops (as systemd's PrivateTmp), and its own IPC namespace (System V shared memory, semaphores, message "
        "queues; POSIX message queues), freed when it stops (as PrivateIPC); false = the host's shared /tmp, /var/tmp, "
        "/dev/shm and IPC.",
    )
    hide_processes: bool = Field(
        True,
        description="With private_tmp, each server gets a /proc of its own with hidepid=invisible (Linux 5.8 or later): its "
        "processes see only their own account's processes, not other users' command lines.",
    )

    def gpu_device(self, gpu: str) -> str:
        """The device node of GPU ``gpu``: from gpu_devices, else /dev/nvidia<id>."""
        return self.gpu_devices.get(str(gpu), f"/dev/nvidia{gpu}")


class SlurmBackend(Strict):
    """Single-user servers as SLURM jobs, submitted with sbatch as the user's own Unix account."""

    type: Literal["slurm"] = Field(description="Backend kind: slurm (a batch cluster).")
    slurm_conf: StrictStr | None = Field(
        None, description="SLURM_CONF for the hub's SLURM commands and the jobs; default: SLURM's own."
    )
    submit_prefix: list[StrictStr] | None = Field(
        None,
        description="Runs sbatch/scancel as the user ({username}). Default: sudo -n -u {username} with submit_wrapper, "
        "else sudo -E -u {username} (the hub as root).",
    )
    submit_wrapper: StrictStr | None = Field(
        None,
        description="The root-owned wrapper that sudo runs as the user, for a hub that is not root, e.g. "
        "/usr/local/libexec/hpclab-submit (deploy/libexec/hpclab-submit with deploy/sudoers/hpclab): the job's "
        'environment goes to it on stdin, never in an argument (docs/slurm.md, "A hub that is not root").',
    )
    partition: StrictStr | None = Field(None, description="Default partition; a profile's slurm.partition wins.")
    account: StrictStr | None = Field(None, description="Default --account.")
    qos: StrictStr | None = Field(None, description="Default --qos.")
    setup: list[StrictStr] = Field(
        default_factory=list, description="Shell lines run in the job before the server (module load, source a venv, ...)."
    )
    job_command: list[StrictStr] | None = Field(
        None,
        description="Command that reports the port and starts the server in the job; "
        "default hpclab-singleuser next to the hub's Python.",
    )
    node_prefix: StrictStr | None = Field(
        None,
        description="Shared software folder the compute nodes run the server and kernels from, made by "
        "`hpclab-hub node-install PREFIX` (e.g. /shared/hpclab): the job command, the server's Python, JupyterLab's "
        "settings and the job's PATH point into it instead of the hub's venv. Default: the hub's own venv, which the "
        "nodes must then see at the same path.",
    )
    output: StrictStr = Field("{home}/.hpclab-jupyter-%j.log", description="Job output file ({home}, {username}; %j = job id).")
    hub_api_url: StrictStr | None = Field(None, description="Hub API URL as seen from compute nodes; default the hub's own.")
    bin_dir: StrictStr | None = Field(
        None,
        description="Folder of this cluster's SLURM commands (sbatch, squeue, sinfo, scontrol, scancel, sacctmgr), e.g. "
        "/opt/slurm/24.11/bin; it also leads the jobs' PATH. Default: found on the hub's PATH.",
    )
    poll_interval: int = Field(5, ge=1, le=600, description="Seconds between the hub's batched squeue calls (and server polls).")
    command_timeout: int = Field(
        30, ge=1, description="Seconds before a SLURM command counts as failed (the answer is then 'unknown')."
    )
    orphan_jobs: Literal["report", "cancel"] = Field(
        "report", description="At hub start, jobs of this hub that no server owns are logged, or cancelled."
    )
    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Extra environment for every job.")


Backend = Annotated[LocalBackend | SlurmBackend, Field(discriminator="type")]
