"""Local backend: JupyterLab as a process on the hub's machine, with the profile's cores, memory and GPUs."""

from __future__ import annotations

import os
import resource
import contextlib
import time

from hpclab.walltime_signal import EARLY_SIGNAL
from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Dict

from .config.model import LocalBackend, Profile
from .config.units import format_duration, format_memory
from .profile_spawner import ProfileSpawnerMixin
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


class LocalProfileSpawner(ProfileSpawnerMixin, LocalProcessSpawner):
    """Starts jupyterhub-singleuser locally for the profile the user picked, enforcing its limits."""

    backend_type = "local"
    allocation_state = Dict(help="Cores and GPUs held by the running server (kept in state).")
    _stopping_at_walltime = False  # stop() polls too: no second stop from inside the first
    _early_signal_sent = False  # SIGUSR2 already sent for this start

    @property
    def owner_key(self) -> str:
        """Who holds an allocation: user plus server name, so named servers are distinct."""
        return f"{self.user.name}/{self.name}"

    # --- profile and pool -----------------------------------------------------------------------

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
        if self.allocation_state:
            state["allocation"] = dict(self.allocation_state)
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.allocation_state = state.get("allocation", {})
        if self.pid and self.allocation_state and self.deployment.profile(self.profile_slug):
            self.pool(self.profile).claim(self.owner_key, Allocation.from_state(self.allocation_state))

    def clear_state(self) -> None:
        super().clear_state()
        if self.profile_slug and self.deployment.profile(self.profile_slug):
            self.pool(self.profile).release(self.owner_key)
        self.allocation_state = {}

    # --- process ------------------------------------------------------------------------------

    def get_args(self) -> list[str]:
        args = super().get_args() + self.server_args()
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
        env.update(self.profile_env())
        if profile.local:
            env.update(profile.local.environment)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(allocation.gpu_ids)
        if self.job_end_epoch:
            env["HPCLAB_JOB_END_TIME"] = str(int(self.job_end_epoch))
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
            self.record_failure("no_free_gpu")
            raise web.HTTPError(409, str(exc)) from None
        self.start_metrics()
        self.allocation_state = allocation.as_state()
        self.start_wall_clock()
        self.end_reason = ""
        self._early_signal_sent = False
        self.log.info(
            "Starting %s with profile %s: cpus %s, memory %s, gpus %s",
            self._log_name,
            profile.slug,
            list(allocation.cpu_ids),
            format_memory(profile.memory) if profile.memory else "unlimited",
            list(allocation.gpu_ids) or "none",
        )
        try:
            ip, port = await super().start()
            await self._wait_listening(ip, port)
            return ip, port
        except Exception:
            pool.release(self.owner_key)
            self.allocation_state = {}
            raise

    async def poll(self):
        """Exit status if the server is gone; stops it at its wall time, after SIGUSR2 ``save_before`` ahead.

        The same early signal as SLURM's ``--signal=B:USR2@N``: JupyterLab saves every open document.
        Checked every ``poll_interval`` seconds (backends.*.poll_interval), so both may come that late.
        """
        status = await super().poll()
        if status is not None or not self.job_end_epoch or self._stopping_at_walltime:
            return status
        left = self.job_end_epoch - time.time()
        if left <= 0:
            limit = format_duration(self.profile.time_limit or 0)
            self.end_reason = f"the server reached its time limit ({limit}) and was stopped."
            self.log.info("Stopping %s: wall time %s is over", self._log_name, limit)
            self._stopping_at_walltime = True
            try:
                await self.stop()
            finally:
                self._stopping_at_walltime = False
            return 0
        if left <= (self.deployment.walltime.save_before or 0) and not self._early_signal_sent:
            self._early_signal_sent = True
            with contextlib.suppress(ProcessLookupError):  # just exited: the next poll reports it
                os.kill(self.pid, EARLY_SIGNAL)
                self.log.info("Sent %s to %s: %.0f s of wall time left", EARLY_SIGNAL.name, self._log_name, left)
        return None

    async def _wait_listening(self, ip: str, port: int) -> None:
        """Return as soon as the server accepts connections (polled every 0.1 s), or fail at once if it exits.

        JupyterHub's own readiness check backs off randomly up to seconds between tries; answering it
        only after the port is open saves that wait, and a crashed server is reported with its exit code.
        """
        import asyncio

        deadline = asyncio.get_running_loop().time() + self.http_timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise web.HTTPError(500, f"JupyterLab exited during start-up with code {self.proc.returncode}; see the hub log")
            try:
                _, writer = await asyncio.open_connection(ip, port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    async def progress(self):
        profile = self.profile
        allocation = Allocation.from_state(self.allocation_state)
        cpus = ",".join(map(str, allocation.cpu_ids)) or "…"
        gpus = ",".join(allocation.gpu_ids) or "none"
        memory = format_memory(profile.memory) if profile.memory else "no limit"
        yield {"progress": 20, "message": f"Profile {profile.display_name}: CPUs {cpus}, memory {memory}, GPUs {gpus}"}
        yield {"progress": 50, "message": "Starting JupyterLab on this server…"}
