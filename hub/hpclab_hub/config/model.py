"""The deploy YAML as a strict pydantic model: every key typed, unknown keys rejected."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationInfo, field_validator, model_validator

from hpclab_hub.config.choices import ProfileChoices
from hpclab_hub.config.units import DurationSeconds, MemoryBytes

Name = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")]
Slug = Annotated[StrictStr, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]


def _not_bool(value: object) -> object:
    # pydantic's lax int takes true/false as 1/0, so `gpus: yes` would silently mean one GPU
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, got {str(value).lower()} (a boolean)")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(_not_bool)]
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_not_bool)]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = Path(path).expanduser()
    return path if path.is_absolute() or base is None else (Path(base) / path).resolve()


class TLSProxy(Strict):
    """A reverse proxy (nginx) in front of the hub ends TLS: users open https://<public_host>[:port], the hub's cookies
    are Secure, and the client address the proxy passes on reaches the login lockout."""

    port: Port = Field(443, description="Port users open on the proxy: https://<public_host>[:port].")
    trusted_addresses: list[StrictStr] = Field(
        ["127.0.0.2"], min_length=1,
        description="Addresses (or networks) the proxy connects to the hub from: only a request arriving from one of them has "
        "the client address it names in X-Forwarded-For believed (login lockout, sign-up limit); from anywhere else the "
        "hub counts the address it sees. Give the proxy an address of its own (nginx's proxy_bind 127.0.0.2), never "
        "one users' code connects from.",
    )

    @field_validator("trusted_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address or network") from None
        return value


class HubSettings(Strict):
    """Where the hub listens and where it keeps its state."""

    ip: StrictStr = Field("127.0.0.1", description="Address the public proxy binds to.")
    port: Port = Field(8000, description="Public port users open in their browser.")
    base_url: StrictStr = Field("/", pattern=r"^/", description="URL prefix of the whole hub, e.g. /jupyter/.")
    public_host: StrictStr = Field(
        "localhost", pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
        description="Host name users open the hub at (e.g. hub.example.org); with user_subdomains, each user's servers at <user>.<public_host>.",
    )
    user_subdomains: bool = Field(
        True, description="Serve each user's servers on their own host name (<user>.<public_host>), a separate browser origin: "
        "a page from one user's server cannot act as another user on the hub. Needs wildcard DNS (and a wildcard certificate) in production.",
    )
    hub_ip: StrictStr = Field("127.0.0.1", description="Address of the hub's internal API (servers call back to it).")
    hub_port: Port = Field(8081, description="Port of the hub's internal API.")
    proxy_api_port: Port = Field(8001, description="Port of configurable-http-proxy's REST API (loopback only).")
    connect_url: StrictStr | None = Field(
        None, pattern=r"^https?://",
        description="Where servers and their kernels reach the hub API: the proxy's public address, never the hub's own port "
        "(one door). Default <scheme>://<hub.ip, or 127.0.0.1 when it is 0.0.0.0>:<port>; with HTTPS give the name the "
        "certificate holds, e.g. https://hub.example.org.",
    )
    data_dir: Path = Field(Path(".hpclab"), description="Folder for hub state (database, cookie secret, logs); relative to the YAML file.")
    db_url: StrictStr | None = Field(None, description="SQLAlchemy URL of the hub database; default sqlite in data_dir.")
    id: StrictStr | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description="This hub's id in its SLURM jobs' comments (hpclab:<id>:<profile>), by which it finds its orphan jobs; "
        "default one kept in the database (made once; a hub from before keeps its old one). Set it when hubs share a database.",
    )
    cookie_secret_file: Path | None = Field(None, description="File holding the cookie secret; default data_dir/jupyterhub_cookie_secret.")
    admin_users: list[Name] = Field(["admin"], description="Hub administrators.")
    keep_servers_on_restart: bool = Field(True, description="Leave users' servers running when the hub stops, and re-adopt them on start.")
    ssl_cert: Path | None = Field(None, description="TLS certificate (PEM) for HTTPS on hub.port; with ssl_key.")
    ssl_key: Path | None = Field(None, description="TLS private key (PEM) for ssl_cert.")
    http_redirect_port: Port | None = Field(None, description="Also listen for plain HTTP here and redirect to HTTPS.")
    tls_proxy: TLSProxy | None = Field(
        None, description="A TLS reverse proxy in front of the hub (nginx: deploy/nginx/hpclab.conf); leave ssl_cert unset.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Hub log level (tokens are never logged).")
    site_name: StrictStr = Field("HPCLab", min_length=1, max_length=80, description="Name shown in page titles and on the spawn form.")
    logo: Path | None = Field(None, description="Logo image (PNG/SVG) shown top left of every hub page; relative to the YAML file.")
    named_servers: bool = Field(True, description="Users may run several servers at once, each with a name and its own profile.")
    named_server_limit: NonNegativeInt = Field(
        3, description="Most named servers per user besides the default one (0 = no limit); quotas still count every server."
    )
    concurrent_spawn_limit: NonNegativeInt = Field(
        20, description="Most servers starting at once; later starts wait in line and their progress page says where (0 = no limit)."
    )

    @field_validator("data_dir", "cookie_secret_file", "ssl_cert", "ssl_key", "logo")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    def public_url(self, port: int | None = None) -> str:
        """The hub's address in users' browsers: scheme, public_host and ``port`` (default hub.port; left out when
        it is the scheme's own)."""
        if self.tls_proxy is not None:  # users open the TLS proxy, not the hub's own port
            shown = "" if self.tls_proxy.port == 443 else f":{self.tls_proxy.port}"
            return f"https://{self.public_host}{shown}"
        scheme = "https" if self.ssl_cert else "http"
        port = self.port if port is None else port
        shown = "" if port == (443 if self.ssl_cert else 80) else f":{port}"
        return f"{scheme}://{self.public_host}{shown}"

    @property
    def database_url(self) -> str:
        """The database URL to use: the configured one or SQLite inside ``data_dir``."""
        return self.db_url or f"sqlite:///{self.data_dir / 'jupyterhub.sqlite'}"

    @property
    def cookie_secret_path(self) -> Path:
        """Where the cookie secret lives (kept across restarts so logins survive them)."""
        return self.cookie_secret_file or self.data_dir / "jupyterhub_cookie_secret"


class SignupLimit(Strict):
    """How many sign-ups one address may make (bots filling the approval page)."""

    per_address: NonNegativeInt = Field(5, description="Sign-ups from one address within `window`; 0 = no limit.")
    window: DurationSeconds = Field("01:00:00", description="Period over which sign-ups are counted.")


class NativeAuthSettings(Strict):
    """Local accounts kept in the hub database (jupyterhub-nativeauthenticator)."""

    allow_signup: bool = Field(True, description="Show a sign-up page; new accounts wait for an admin's approval.")
    minimum_password_length: Int = Field(8, ge=1)
    signup_limit: SignupLimit = Field(default_factory=dict, description="Sign-up rate limit per address.")


class LoginLockout(Strict):
    """Refuse logins for a while after repeated failures (native and LDAP passwords); kept in data_dir/login-guard.json."""

    attempts: NonNegativeInt = Field(
        5, description="Failed logins for one user name from one address within `window` before that pair is locked; 0 = off."
    )
    address_attempts: NonNegativeInt = Field(
        50, description="Failed logins from one address (any names) before the address is locked; 0 = off."
    )
    account_attempts: NonNegativeInt = Field(
        10, description="Failed logins for one user name from any addresses within `window` before each further attempt "
        "of that name waits (the delay doubles per failure up to `account_delay`); addresses the name logged in from "
        "before are exempt. 0 = off.",
    )
    window: DurationSeconds = Field("00:15:00", description="Period over which failures are counted.")
    lock: DurationSeconds = Field("00:15:00", description="How long a lock of one name from one address, or of one address, lasts (the right password is refused too).")
    account_delay: DurationSeconds = Field(
        "00:01:00", description="Longest wait for one user name after `account_attempts` failures: short, since anyone can cause it."
    )


class LDAPAuthSettings(Strict):
    """Log in against an LDAP directory (jupyterhub-ldapauthenticator); LDAP groups become hub groups."""

    server: StrictStr = Field(description="LDAP server host name.")
    port: Port = Field(389, description="LDAP port (636 for LDAPS).")
    tls: Literal["starttls", "ldaps", "none"] = Field(
        "starttls", description="StartTLS before binding, LDAPS from the start, or none (a test directory only)."
    )
    bind_dn_templates: list[StrictStr] = Field(
        min_length=1, description="DNs to bind as, with {username}, e.g. uid={username},ou=people,dc=example,dc=org."
    )
    groups: dict[Name, StrictStr] = Field(
        default_factory=dict, description="Hub group -> LDAP group DN; membership feeds profile access."
    )
    admin_groups: list[Name] = Field(default_factory=list, description="Hub groups (keys of groups) whose members are admins.")
    login_groups: list[Name] = Field(
        default_factory=list, description="Only members of these hub groups may log in; empty = any LDAP account."
    )


class OIDCAuthSettings(Strict):
    """Single sign-on with any OpenID Connect provider (INDIGO IAM, Keycloak, ...) through oauthenticator."""

    issuer: StrictStr = Field(description="Issuer URL; endpoints come from its /.well-known/openid-configuration.")
    client_id: StrictStr
    client_secret_env: StrictStr = Field(
        "HPCLAB_OIDC_CLIENT_SECRET", description="Environment variable holding the client secret (never put it in the YAML)."
    )
    callback_url: StrictStr | None = Field(None, description="Redirect URI registered at the provider; default <hub URL>/hub/oauth_callback.")
    scopes: list[StrictStr] = Field(["openid", "profile", "email", "groups"], description="Scopes to ask for.")
    username_claim: StrictStr = Field("preferred_username", description="Claim that becomes the hub user name.")
    groups_claim: StrictStr = Field("groups", description="Claim listing the user's groups (synced into the hub at login).")
    admin_groups: list[Name] = Field(default_factory=list, description="Members of these groups are admins.")
    allowed_groups: list[Name] = Field(default_factory=list, description="Only members of these groups may log in; empty = anyone the provider accepts.")
    login_service: StrictStr = Field("single sign-on", description="Name on the login button.")


class AuthSettings(Strict):
    """Who may log in, who is admin, which groups people belong to."""

    type: Literal["native", "ldap", "oidc"] = Field(
        "native", description="Authenticator: 'native' keeps accounts in the hub database; 'ldap' asks a directory; 'oidc' single sign-on."
    )
    admin_password_env: StrictStr = Field(
        "HPCLAB_ADMIN_PASSWORD",
        description="Environment variable holding the first admin's password; generated and printed once when unset.",
    )
    groups: dict[Name, list[Name]] = Field(
        default_factory=dict, description="Group -> members; profiles' `groups` refer to these names."
    )
    native: NativeAuthSettings = Field(default_factory=dict, description="Settings of auth.type native.")
    lockout: LoginLockout = Field(default_factory=dict, description="Login lockout after repeated wrong passwords.")
    ldap: LDAPAuthSettings | None = Field(None, description="Settings of auth.type ldap.")
    oidc: OIDCAuthSettings | None = Field(None, description="Settings of auth.type oidc.")


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
        "1G", description="With memory: auto, what is kept back for the hub, its proxy and the system (e.g. 2G)."
    )
    gpu_devices: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="GPU id -> its device node, for ids whose node is not /dev/nvidia<id>; a server may open only its own GPUs' nodes.",
    )
    accounts: LocalAccounts = Field(default_factory=dict, description="The Unix account each person's server runs as.")
    home_dir: StrictStr | None = Field(
        None, description="Working folder of each server ({username}, {account}); default: the account's home. Never inside hub.data_dir."
    )
    limits: Literal["auto", "cgroups", "best-effort"] = Field(
        "auto",
        description="cgroups: the kernel enforces memory (all processes together), cores, processes and GPUs per server, and "
        "stopping a server kills all it started; best-effort: CPU affinity and a per-process RLIMIT_DATA only; "
        "auto: cgroups when the hub runs as root.",
    )
    pids_limit: Int | None = Field(4096, ge=16, description="Most processes and threads one server may have at once (cgroups); null = no limit.")
    server_nice: Int = Field(
        10, ge=0, le=19,
        description="CPU priority of the servers below the hub's, as a niceness (0-19): every server process runs at it and, with "
        "cgroups, all servers together weigh what one process at it would; the hub and its proxy keep the CPU they need while "
        "servers compute or start in a burst. Users cannot lower it. 0 = the servers together weigh as much as the hub.",
    )
    singleuser_cmd: list[StrictStr] | None = Field(
        None, description="Command that starts the server; default the hub's Python running its jupyterhub-singleuser without import-time work it never uses (python -m hpclab_hub.deferred_imports jupyterhub-singleuser)."
    )
    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Extra environment for every server.")
    poll_interval: int = Field(
        10, ge=1, le=600, description="Seconds between checks of each server (exited? wall time over? early signal due?)."
    )
    private_tmp: bool = Field(
        True,
        description="Each server (hub as root) gets its own /tmp and /dev/shm: a fresh tmpfs in its own mount namespace, at most "
        "the profile's memory, counted against the server's memory limit and gone when the server stops (as systemd's "
        "PrivateTmp); false = the host's shared /tmp and /dev/shm.",
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
    slurm_conf: StrictStr | None = Field(None, description="SLURM_CONF for the hub's SLURM commands and the jobs; default: SLURM's own.")
    submit_prefix: list[StrictStr] = Field(
        ["sudo", "-E", "-u", "{username}"], description="Runs sbatch/scancel as the user ({username}); the hub runs as root or has sudo rights."
    )
    partition: StrictStr | None = Field(None, description="Default partition; a profile's slurm.partition wins.")
    account: StrictStr | None = Field(None, description="Default --account.")
    qos: StrictStr | None = Field(None, description="Default --qos.")
    setup: list[StrictStr] = Field(
        default_factory=list, description="Shell lines run in the job before the server (module load, source a venv, ...)."
    )
    job_command: list[StrictStr] | None = Field(
        None, description="Command that reports the port and starts the server in the job; default hpclab-singleuser next to the hub's Python."
    )
    output: StrictStr = Field("{home}/.hpclab-jupyter-%j.log", description="Job output file ({home}, {username}; %j = job id).")
    hub_api_url: StrictStr | None = Field(None, description="Hub API URL as seen from compute nodes; default the hub's own.")
    bin_dir: StrictStr | None = Field(
        None, description="Folder of this cluster's SLURM commands (sbatch, squeue, sinfo, scontrol, scancel, sacctmgr), e.g. "
        "/opt/slurm/24.11/bin; it also leads the jobs' PATH. Default: found on the hub's PATH.",
    )
    poll_interval: int = Field(5, ge=1, le=600, description="Seconds between the hub's batched squeue calls (and server polls).")
    command_timeout: int = Field(30, ge=1, description="Seconds before a SLURM command counts as failed (the answer is then 'unknown').")
    orphan_jobs: Literal["report", "cancel"] = Field(
        "report", description="At hub start, jobs of this hub that no server owns are logged, or cancelled."
    )
    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Extra environment for every job.")


Backend = Annotated[LocalBackend | SlurmBackend, Field(discriminator="type")]


class ProfileLocalOverrides(Strict):
    """Settings of a profile that only the local backend reads."""

    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class ProfileSlurmOverrides(Strict):
    """Settings of a profile that only a SLURM backend reads."""

    partition: StrictStr | None = None
    account: StrictStr | None = None
    qos: StrictStr | None = None
    reservation: StrictStr | None = None
    constraint: StrictStr | None = Field(None, description="--constraint (node features).")
    gpu_type: StrictStr | None = Field(None, description="Typed GRES, e.g. a100 gives --gres=gpu:a100:N.")
    extra_sbatch: list[StrictStr] = Field(default_factory=list, description="Further sbatch options, e.g. --exclusive.")
    setup: list[StrictStr] = Field(default_factory=list, description="Shell lines after the backend's setup lines.")


class Profile(Strict):
    """One choice on the spawn form (the shape of kubespawner's profile_list)."""

    slug: Slug = Field(description="Stable identifier, used in URLs, state and quotas.")
    display_name: StrictStr = Field(min_length=1)
    description: StrictStr = ""
    default: bool = Field(False, description="Pre-selected on the form (at most one profile).")
    backend: Name = Field(description="Name of an entry under `backends`.")
    cpus: Int = Field(1, ge=1, description="Cores; pinned exclusively where enough are free.")
    memory: MemoryBytes | None = Field(None, description="Memory limit (4G, 512M); none = unlimited.")
    gpus: Int = Field(0, ge=0, description="GPUs handed out exclusively from the backend's pool.")
    time_limit: DurationSeconds | None = Field(None, description="Wall time (SLURM); on local servers, shown as time left.")
    idle_timeout: DurationSeconds | None = Field(
        None, description="Idle time after which this profile's servers are stopped (with culling on); none = `culling.timeout`."
    )
    kernels: list[Name] = Field(default_factory=list, description="Kernels offered; empty = all installed.")
    default_kernel: Name | None = Field(None, description="Kernel a new notebook gets; one of `kernels` (none = the first of them).")
    groups: list[Name] = Field(default_factory=list, description="Groups allowed to use it; empty = everyone.")
    spawn_timeout: Int = Field(120, ge=1, description="Seconds to wait for the server before giving up.")
    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Extra environment for the server.")
    choices: ProfileChoices | None = Field(
        None, description="What the user may choose on the form or in user_options, each within bounds; the values above are the defaults."
    )
    local: ProfileLocalOverrides | None = Field(None, description="Overrides read only by a local backend.")
    slurm: ProfileSlurmOverrides | None = Field(None, description="Overrides read only by a SLURM backend.")

    @property
    def initial_kernel(self) -> str | None:
        """The kernel a new notebook gets: ``default_kernel``, else the first offered, else none (Jupyter's own)."""
        return self.default_kernel or (self.kernels[0] if self.kernels else None)


class QuotaLimits(Strict):
    """Upper bounds on what is in use at once (servers running or starting); absent = no bound."""

    servers: NonNegativeInt | None = Field(None, description="Servers at once.")
    gpus: NonNegativeInt | None = Field(None, description="GPUs at once.")
    cpus: NonNegativeInt | None = Field(None, description="Cores at once.")
    memory: MemoryBytes | None = Field(None, description="Memory limits of the servers at once, added up (e.g. 16G).")


class DiskQuota(Strict):
    """Size of each person's home on a local backend, enforced by the kernel (ext4/XFS user quota or a btrfs qgroup).

    A home is shared by all of a person's servers, whatever the profile, so its size goes by person: ``users``
    if named there, else the largest of ``per_user`` and the person's ``groups``.
    """

    per_user: MemoryBytes | None = Field(None, description="Home size every person gets (10G, 500M); none = no quota unless a group or user entry gives one.")
    groups: dict[Name, MemoryBytes] = Field(
        default_factory=dict, description="Group -> home size of each of its members (the largest of a person's groups and per_user counts)."
    )
    users: dict[Name, MemoryBytes] = Field(default_factory=dict, description="User -> home size (replaces per_user and groups for them).")

    def limit_for(self, user: str, groups: "frozenset[str] | set[str]") -> int | None:
        """The home size of ``user`` (a member of ``groups``) in bytes, or None for no quota."""
        if user in self.users:
            return self.users[user]
        sizes = [self.groups[g] for g in groups if g in self.groups] + ([self.per_user] if self.per_user else [])
        return max(sizes) if sizes else None

    @property
    def configured(self) -> bool:
        return bool(self.per_user or self.groups or self.users)


class QuotaSettings(Strict):
    """Fair sharing: limits per group (all members together), per user, and per profile; checked at spawn."""

    groups: dict[Name, QuotaLimits] = Field(default_factory=dict, description="Group -> limits for all its members together.")
    users: dict[Name, QuotaLimits] = Field(default_factory=dict, description="User -> limits (replaces per_user for them).")
    per_user: QuotaLimits | None = Field(None, description="Limits every user has on their own.")
    profiles: dict[Slug, QuotaLimits] = Field(default_factory=dict, description="Profile -> limits for everyone using it.")
    admins_exempt: bool = Field(False, description="Admins skip every quota.")
    disk: DiskQuota = Field(
        default_factory=dict, description="Home size per person on local backends, enforced by the kernel (set at each start); admins_exempt does not apply."
    )


class KernelRuntime(Strict):
    """Where a kernel's Python lives: a venv or conda prefix, or an Apptainer image (see docs/kernels.md)."""

    type: Literal["venv", "conda", "apptainer"] = Field(
        description="venv/conda: run PREFIX/bin/python; apptainer: run python inside IMAGE with `apptainer exec`."
    )
    prefix: Path | None = Field(None, description="venv or conda prefix (type venv/conda); relative to the YAML file.")
    image: Path | None = Field(None, description="Apptainer image, e.g. mri.sif (type apptainer); relative to the YAML file.")
    python: StrictStr = Field("python", description="Python inside the image (type apptainer).")
    apptainer: StrictStr = Field("apptainer", description="The apptainer (or singularity) command (type apptainer).")
    options: list[StrictStr] = Field(
        ["--nv"], description="Options of `apptainer exec` (type apptainer); --nv makes the host's NVIDIA GPUs usable."
    )

    @field_validator("prefix", "image")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @model_validator(mode="after")
    def _needs_its_path(self) -> "KernelRuntime":
        if self.type in ("venv", "conda") and self.prefix is None:
            raise ValueError(f"a {self.type} runtime needs `prefix`")
        if self.type == "apptainer" and self.image is None:
            raise ValueError("an apptainer runtime needs `image`")
        return self


class KernelEntry(Strict):
    """A curated kernel a profile can offer; `hpclab-hub kernels install` installs those with a runtime."""

    display_name: StrictStr = Field(description="Name in JupyterLab's launcher and kernel menu.")
    description: StrictStr = Field("", description="One line on what the kernel is for (`hpclab-hub kernels list`).")
    runtime: KernelRuntime | None = Field(None, description="Where the kernel's Python lives; none = declared only, not installed.")
    environment: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="Site settings exported before the kernel starts (FREESURFER_HOME, data paths); $VARS are expanded.",
    )
    modules: list[StrictStr] = Field(
        default_factory=list, description="Shell lines run before the kernel starts (module load ...); their environment is kept."
    )


class CullingSettings(Strict):
    """Stop idle servers (jupyterhub-idle-culler) so scarce cores and GPUs return to the pool."""

    enabled: bool = False
    timeout: DurationSeconds = Field("01:00:00", description="Idle time after which a server is stopped.")
    every: DurationSeconds = Field("00:05:00", description="How often to check (keep it well below the shortest timeout).")

    def timeout_for(self, profile: "Profile") -> int:
        """Seconds of idleness after which a server of ``profile`` is stopped."""
        return self.timeout if profile.idle_timeout is None else profile.idle_timeout


class WalltimeSettings(Strict):
    """What JupyterLab does before a server's wall time runs out (the @hpclab/walltime plugin)."""

    warn_before: DurationSeconds = Field("00:10:00", description="Warn the user (and save open documents) this long before the end.")
    save_before: Annotated[DurationSeconds, Field(le=65535)] | None = Field(  # 65535 s: the most --signal takes
        "00:02:00",
        description="SLURM signals the job this long before its limit (`--signal=B:USR2@N`, up to 60 s early); "
        "from then on open documents are saved every 10 s. null = no signal.",
    )


#: The examples of a source checkout of HPCLab (absent where HPCLab was installed as a package).
SHIPPED_EXAMPLES = Path(__file__).resolve().parents[3] / "notebooks"


class ExamplesSettings(Strict):
    """The example notebooks every new server finds in its root folder (refreshed at each start, edits kept)."""

    enabled: bool = Field(True, description="Copy the examples into each server's root folder at start.")
    source: Path | None = Field(
        None, description="Folder holding the deployment's examples (it must exist); default: the notebooks/ folder of "
        "HPCLab's source checkout, and where that is absent examples are off (with a warning). Relative to the YAML file."
    )
    folder: StrictStr = Field(
        "examples", pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the folder in each server's root (one level, no slashes)."
    )

    @field_validator("source")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @property
    def source_dir(self) -> Path:
        """The folder examples are copied from: ``source``, else the notebooks/ folder next to the hub package."""
        return self.source or SHIPPED_EXAMPLES

    @property
    def delivered(self) -> bool:
        """Whether servers get the examples: enabled, from ``source`` if set, else from the shipped folder if it exists."""
        return self.enabled and (self.source is not None or SHIPPED_EXAMPLES.is_dir())

    @property
    def off_note(self) -> str:
        """Why enabled examples are off on this machine ('' when they are not): no source, no shipped folder."""
        if not self.enabled or self.delivered:
            return ""
        return (f"examples are off: examples.source is not set and the default folder {SHIPPED_EXAMPLES} (HPCLab's "
                "notebooks/, only in a source checkout) is absent; set examples.source to your copy of the example "
                "notebooks, or examples.enabled: false")


class Deployment(Strict):
    """A whole HPCLab deployment, as written in deploy/*.yaml."""

    hub: HubSettings = Field(default_factory=dict, description="Addresses, ports, state folder, database, admins.")
    auth: AuthSettings = Field(default_factory=dict, description="Login and group membership.")
    backends: dict[Name, Backend] = Field(min_length=1, description="Where servers run, by name; profiles pick one.")
    profiles: list[Profile] = Field(min_length=1, description="The choices on the spawn form, in order.")
    kernels: dict[Name, KernelEntry] = Field(default_factory=dict, description="Curated kernels profiles may offer.")
    culling: CullingSettings = Field(default_factory=dict, description="Stopping idle servers.")
    quotas: QuotaSettings = Field(default_factory=dict, description="Limits on servers, GPUs and cores in use.")
    walltime: WalltimeSettings = Field(default_factory=dict, description="Warning and saving before a server's wall time ends.")
    examples: ExamplesSettings = Field(default_factory=dict, description="Example notebooks in every session.")

    @property
    def account_prefixes(self) -> list[str]:
        """Prefixes of the Unix accounts local backends create (a hub name must fit behind each)."""
        return [b.accounts.prefix for b in self.backends.values() if b.type == "local" and b.accounts.mode in ("create", "auto")]

    def profile(self, slug: str) -> Profile | None:
        """The profile with this slug, or None."""
        return next((p for p in self.profiles if p.slug == slug), None)
