"""The deploy YAML as a strict pydantic model: every key typed, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictStr, ValidationInfo, field_validator, model_validator

from hpclab.apps import APPS
from hpclab.lab_features import LAB_FEATURES
from hpclab_hub.config.backend_model import Backend, LocalAccounts, LocalBackend, SlurmBackend
from hpclab_hub.config.choices import ProfileChoices
from hpclab_hub.config.fields import Int, Name, NonNegativeInt, Slug, Strict, _resolve
from hpclab_hub.config.hub_model import AuthSettings, HubSettings
from hpclab_hub.config.kb_model import KnowledgeBaseSettings
from hpclab_hub.config.modules_model import ModulesSettings
from hpclab_hub.config.priority_model import PrioritySettings
from hpclab_hub.config.units import DurationSeconds, MemoryBytes

__all__ = ["Backend", "LocalAccounts", "LocalBackend", "SlurmBackend", "AuthSettings", "HubSettings", "Strict"]


class ProfileLocalOverrides(Strict):
    """Settings of a profile that only the local backend reads."""

    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class ProfileSlurmOverrides(Strict):
    """Settings of a profile that only a SLURM backend reads."""

    partition: StrictStr | None = None
    account: StrictStr | None = None
    qos: StrictStr | None = None
    reservation: StrictStr | None = None
    # default= by name: a positional default is invisible to mypy's dataclass_transform (ProfileSlurmOverrides() below)
    constraint: StrictStr | None = Field(default=None, description="--constraint (node features).")
    gpu_type: StrictStr | None = Field(default=None, description="Typed GRES, e.g. a100 gives --gres=gpu:a100:N.")
    extra_sbatch: list[StrictStr] = Field(default_factory=list, description="Further sbatch options, e.g. --exclusive.")
    setup: list[StrictStr] = Field(default_factory=list, description="Shell lines after the backend's setup lines.")


def _known_app(name: str) -> str:
    if name not in APPS:
        raise ValueError(f"unknown app {name!r}; the apps HPCLab knows: {', '.join(APPS)}")
    return name


#: an app's name in a profile's `apps` (hpclab.apps.APPS)
AppName = Annotated[StrictStr, AfterValidator(_known_app)]


def _known_feature(name: str) -> str:
    if name not in LAB_FEATURES:
        raise ValueError(f"unknown lab feature {name!r}; the features HPCLab knows: {', '.join(LAB_FEATURES)}")
    return name


#: a feature's name in a profile's `lab_features` (hpclab.lab_features.LAB_FEATURES)
LabFeatureName = Annotated[StrictStr, AfterValidator(_known_feature)]


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
    default_kernel: Name | None = Field(
        None, description="Kernel a new notebook gets; one of `kernels` (none = the first of them)."
    )
    groups: list[Name] = Field(default_factory=list, description="Groups allowed to use it; empty = everyone.")
    spawn_timeout: Int = Field(120, ge=1, description="Seconds to wait for the server before giving up.")
    environment: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Extra environment for the server.")
    apps: list[AppName] = Field(
        default_factory=list,
        description="Apps beside notebooks, as launcher tiles in JupyterLab (jupyter-server-proxy): "
        + ", ".join(f"`{name}` ({title})" for name, (title, _) in APPS.items())
        + "; a server gets only its profile's apps (docs/user-guide.md).",
    )
    lab_features: list[LabFeatureName] = Field(
        default_factory=list,
        description="JupyterLab features on this profile's servers, each a maintained extension that is off elsewhere: "
        + ", ".join(f"`{name}` ({feature.title})" for name, feature in LAB_FEATURES.items())
        + " (docs/user-guide.md).",
    )
    choices: ProfileChoices | None = Field(
        None,
        description="What the user may choose on the form or in user_options, each within bounds; "
        "the values above are the defaults.",
    )
    local: ProfileLocalOverrides | None = Field(None, description="Overrides read only by a local backend.")
    slurm: ProfileSlurmOverrides | None = Field(None, description="Overrides read only by a SLURM backend.")

    @field_validator("apps", "lab_features")
    @classmethod
    def _named_once(cls, names: list[str]) -> list[str]:
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is named twice")
        return names

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

    per_user: MemoryBytes | None = Field(
        None, description="Home size every person gets (10G, 500M); none = no quota unless a group or user entry gives one."
    )
    groups: dict[Name, MemoryBytes] = Field(
        default_factory=dict,
        description="Group -> home size of each of its members (the largest of a person's groups and per_user counts).",
    )
    users: dict[Name, MemoryBytes] = Field(
        default_factory=dict, description="User -> home size (replaces per_user and groups for them)."
    )

    def limit_for(self, user: str, groups: frozenset[str] | set[str]) -> int | None:
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
        default_factory=dict,
        validate_default=True,
        description="Home size per person on local backends, enforced by the kernel (set at each start); "
        "admins_exempt does not apply.",
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
    def _needs_its_path(self) -> KernelRuntime:
        if self.type in ("venv", "conda") and self.prefix is None:
            raise ValueError(f"a {self.type} runtime needs `prefix`")
        if self.type == "apptainer" and self.image is None:
            raise ValueError("an apptainer runtime needs `image`")
        return self


class KernelEntry(Strict):
    """A curated kernel a profile can offer; `hpclab-hub kernels install` installs those with a runtime."""

    display_name: StrictStr = Field(description="Name in JupyterLab's launcher and kernel menu.")
    description: StrictStr = Field("", description="One line on what the kernel is for (`hpclab-hub kernels list`).")
    runtime: KernelRuntime | None = Field(
        None, description="Where the kernel's Python lives; none = declared only, not installed."
    )
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
    timeout: DurationSeconds = Field("01:00:00", validate_default=True, description="Idle time after which a server is stopped.")
    every: DurationSeconds = Field(
        "00:05:00", validate_default=True, description="How often to check (keep it well below the shortest timeout)."
    )

    def timeout_for(self, profile: Profile) -> int:
        """Seconds of idleness after which a server of ``profile`` is stopped."""
        return self.timeout if profile.idle_timeout is None else profile.idle_timeout


class WalltimeSettings(Strict):
    """What JupyterLab does before a server's wall time runs out (the @hpclab/walltime plugin)."""

    warn_before: DurationSeconds = Field(
        "00:10:00", validate_default=True, description="Warn the user (and save open documents) this long before the end."
    )
    save_before: Annotated[DurationSeconds, Field(le=65535)] | None = Field(  # 65535 s: the most --signal takes
        "00:02:00",
        validate_default=True,
        description="SLURM signals the job this long before its limit (`--signal=B:USR2@N`, up to 60 s early); "
        "from then on open documents are saved every 10 s. null = no signal.",
    )


#: The examples of a source checkout of HPCLab (absent where HPCLab was installed as a package).
SHIPPED_EXAMPLES = Path(__file__).resolve().parents[3] / "notebooks"


class ExamplesSettings(Strict):
    """The example notebooks every new server finds in its root folder (refreshed at each start, edits kept)."""

    enabled: bool = Field(True, description="Copy the examples into each server's root folder at start.")
    source: Path | None = Field(
        None,
        description="Folder holding the deployment's examples (it must exist); default: the notebooks/ folder of "
        "HPCLab's source checkout, and where that is absent examples are off (with a warning). Relative to the YAML file.",
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
        return (
            f"examples are off: examples.source is not set and the default folder {SHIPPED_EXAMPLES} (HPCLab's "
            "notebooks/, only in a source checkout) is absent; set examples.source to your copy of the example "
            "notebooks, or examples.enabled: false"
        )


class Deployment(Strict):
    """A whole HPCLab deployment, as written in deploy/*.yaml."""

    hub: HubSettings = Field(
        default_factory=dict, validate_default=True, description="Addresses, ports, state folder, database, admins."
    )
    auth: AuthSettings = Field(default_factory=dict, validate_default=True, description="Login and group membership.")
    backends: dict[Name, Backend] = Field(min_length=1, description="Where servers run, by name; profiles pick one.")
    profiles: list[Profile] = Field(min_length=1, description="The choices on the spawn form, in order.")
    kernels: dict[Name, KernelEntry] = Field(default_factory=dict, description="Curated kernels profiles may offer.")
    culling: CullingSettings = Field(default_factory=dict, validate_default=True, description="Stopping idle servers.")
    quotas: QuotaSettings = Field(
        default_factory=dict, validate_default=True, description="Limits on servers, GPUs and cores in use."
    )
    walltime: WalltimeSettings = Field(
        default_factory=dict, validate_default=True, description="Warning and saving before a server's wall time ends."
    )
    examples: ExamplesSettings = Field(
        default_factory=dict, validate_default=True, description="Example notebooks in every session."
    )
    priorities: PrioritySettings = Field(
        default_factory=dict, validate_default=True, description="Which groups go first when GPUs or memory are short."
    )
    modules: ModulesSettings = Field(
        default_factory=dict, validate_default=True, description="Lmod and modulefiles for the `modules` lab feature."
    )
    knowledge_base: KnowledgeBaseSettings = Field(
        default_factory=dict, validate_default=True, description="The hub's page of runnable examples."
    )

    @property
    def account_prefixes(self) -> list[str]:
        """Prefixes of the Unix accounts local backends create (a hub name must fit behind each)."""
        return [b.accounts.prefix for b in self.backends.values() if b.type == "local" and b.accounts.mode in ("create", "auto")]

    def profile(self, slug: str) -> Profile | None:
        """The profile with this slug, or None."""
        return next((p for p in self.profiles if p.slug == slug), None)
