"""Local backend: JupyterLab as a process on the hub's machine, with the profile's cores, memory and GPUs."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Dict, Unicode, default

from .access import ProfileRefused, choose_profile, groups_of, visible_profiles
from .config import cached_deployment
from .config.model import Deployment, LocalBackend, Profile
from .config.units import format_memory
from .form import profile_from_form, render_profile_form
from .resources import Allocation, NoFreeGPU, ResourcePool, pool_for


def _limits_preexec(cpu_ids: tuple[int, ...], memory: int | None, home: str):
    """The function run in the child before exec: pin cores, cap memory, enter the home folder."""

    def preexec() -> None:
        os.sched_setaffinity(0, cpu_ids)
        if memory:
            resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        os.makedirs(home, 0o700, exist_ok=True)
        os.chdir(home)

    return preexec


class LocalProfileSpawner(LocalProcessSpawner):
    """Starts jupyterhub-singleuser locally for the profile the user picked, enforcing its limits."""

    deployment_file = Unicode(help="Path of the deploy YAML this hub was started from.").tag(config=True)

    profile_slug = Unicode("", help="Slug of the profile the running server was started with (kept in state).")
    allocation_state = Dict(help="Cores and GPUs held by the running server (kept in state).")

    @property
    def deployment(self) -> Deployment:
        """The validated deploy YAML (read once per hub process)."""
        return cached_deployment(self.deployment_file)

    @property
    def owner_key(self) -> str:
        """Who holds an allocation: user plus server name, so named servers are distinct."""
        return f"{self.user.name}/{self.name}"

    def user_groups(self) -> frozenset[str]:
        """Groups used for profile access: YAML groups plus the hub's (fed by OIDC/LDAP later)."""
        return groups_of(self.user.name, self.deployment, (g.name for g in self.user.groups))

    # --- the form -----------------------------------------------------------------------------

    @default("options_form")
    def _options_form_default(self):
        return lambda spawner: render_profile_form(visible_profiles(spawner.deployment, spawner.user_groups()))

    @default("options_from_form")
    def _options_from_form_default(self):
        return lambda formdata, spawner=None: profile_from_form(formdata)

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return LocalProfileSpawner._apply_profile

    @staticmethod
    def _apply_profile(spawner: "LocalProfileSpawner", user_options: dict) -> None:
        """Resolve and authorise the requested profile (form and REST API alike) before anything starts."""
        try:
            profile = choose_profile(spawner.deployment, (user_options or {}).get("profile"), spawner.user_groups())
        except ProfileRefused as refused:
            spawner.log.warning("Refused profile for %s: %s", spawner._log_name, refused)
            raise web.HTTPError(refused.status, str(refused)) from None
        backend = spawner.deployment.backends[profile.backend]
        if not isinstance(backend, LocalBackend):
            raise web.HTTPError(400, f"Profile {profile.slug!r} uses backend {profile.backend!r}, which this hub cannot start.")
        spawner.profile_slug = profile.slug
        spawner.start_timeout = profile.spawn_timeout
        spawner.http_timeout = profile.spawn_timeout
        spawner.cpu_limit = float(profile.cpus)
        spawner.mem_limit = profile.memory

    # --- profile and pool -----------------------------------------------------------------------

    @property
    def profile(self) -> Profile:
        """The profile of the current or last start."""
        profile = self.deployment.profile(self.profile_slug)
        if profile is None:
            raise web.HTTPError(400, f"Profile {self.profile_slug!r} is not in the deploy YAML any more.")
        return profile

    def pool(self, profile: Profile) -> ResourcePool:
        """The core/GPU pool of the profile's backend."""
        backend = self.deployment.backends[profile.backend]
        return pool_for(profile.backend, backend.cpus, backend.gpus)

    @property
    def backend(self) -> LocalBackend:
        return self.deployment.backends[self.profile.backend]

    @property
    def home_dir(self) -> str:
        """Working folder of this user's server (created on start)."""
        return self.backend.home_dir.format(data_dir=self.deployment.hub.data_dir, username=self.user.name)

    # --- state across hub restarts ----------------------------------------------------------

    def get_state(self) -> dict:
        state = super().get_state()
        if self.profile_slug:
            state["profile"] = self.profile_slug
        if self.allocation_state:
            state["allocation"] = dict(self.allocation_state)
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.profile_slug = state.get("profile", "")
        self.allocation_state = state.get("allocation", {})
        if self.pid and self.allocation_state and self.deployment.profile(self.profile_slug):
            self.pool(self.profile).claim(self.owner_key, Allocation.from_state(self.allocation_state))

    def clear_state(self) -> None:
        super().clear_state()
        if self.profile_slug and self.deployment.profile(self.profile_slug):
            self.pool(self.profile).release(self.owner_key)
        self.allocation_state = {}

    # --- process ------------------------------------------------------------------------------

    @default("cmd")
    def _cmd_default(self):
        return [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]

    @default("default_url")
    def _default_url_default(self):
        return "/lab"

    def get_args(self) -> list[str]:
        args = super().get_args()
        if os.geteuid() == 0:
            args.append("--allow-root")  # servers run as the hub's own account on the embedded default
        return args

    def user_env(self, env: dict) -> dict:
        env["USER"] = self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        return env

    def get_env(self) -> dict:
        env = super().get_env()
        profile = self.profile
        allocation = Allocation.from_state(self.allocation_state)
        env.update(self.backend.environment)
        env.update(profile.environment)
        if profile.local:
            env.update(profile.local.environment)
        env["HPCLAB_PROFILE"] = profile.slug
        env["HPCLAB_BACKEND"] = profile.backend
        env["CUDA_VISIBLE_DEVICES"] = ",".join(allocation.gpu_ids)
        if profile.time_limit:
            env["HPCLAB_JOB_END_TIME"] = str(int(time.time()) + profile.time_limit)
        return env

    def make_preexec_fn(self, name: str):
        allocation = Allocation.from_state(self.allocation_state)
        return _limits_preexec(allocation.cpu_ids, self.profile.memory, self.home_dir)

    def move_certs(self, paths):
        return paths

    async def start(self):
        profile = self.profile
        pool = self.pool(profile)
        try:
            allocation = pool.allocate(self.owner_key, profile.cpus, profile.gpus)
        except NoFreeGPU as exc:
            raise web.HTTPError(409, str(exc)) from None
        self.allocation_state = allocation.as_state()
        self.log.info(
            "Starting %s with profile %s: cpus %s, memory %s, gpus %s",
            self._log_name,
            profile.slug,
            list(allocation.cpu_ids),
            format_memory(profile.memory) if profile.memory else "unlimited",
            list(allocation.gpu_ids) or "none",
        )
        try:
            return await super().start()
        except Exception:
            pool.release(self.owner_key)
            self.allocation_state = {}
            raise

    async def progress(self):
        profile = self.profile
        allocation = Allocation.from_state(self.allocation_state)
        cpus = ",".join(map(str, allocation.cpu_ids)) or "…"
        gpus = ",".join(allocation.gpu_ids) or "none"
        memory = format_memory(profile.memory) if profile.memory else "no limit"
        yield {"progress": 20, "message": f"Profile {profile.display_name}: CPUs {cpus}, memory {memory}, GPUs {gpus}"}
        yield {"progress": 50, "message": "Starting JupyterLab on this server…"}
