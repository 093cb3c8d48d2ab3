"""Local backend: JupyterLab as a process on the hub's machine, under the user's own Unix account.

Each server runs as its person's account (created on first start, or an existing one) with a clean
environment, inside its own cgroup: the kernel enforces the profile's memory over all the server's
processes, its cores as a cpuset, a process limit and the GPU assignment, and stopping the server
kills everything in the group. Only its account and the hub may connect to its port (one_door.py).
See docs/admin-guide.md, "Security model". A hub without root runs servers as its own account for
one person (trial.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from hpclab.walltime_signal import EARLY_SIGNAL
from hpclab_hub.backends import Availability, Launch, Refusals, ServerContext, ServerUse, Whereabouts
from hpclab_hub.backends.local.availability import local_blocked
from hpclab_hub.backends.local.cgroups import ServerCgroup
from hpclab_hub.backends.local.environment import private_mounts, server_environment
from hpclab_hub.backends.local.launcher import start_process, wait_listening
from hpclab_hub.backends.local.one_door import DoorError, current_door
from hpclab_hub.backends.local.preexec import process_start
from hpclab_hub.backends.local.preparation import make_cgroup, prepare_account, set_disk_quota
from hpclab_hub.backends.local.process import ServerProcess, foreign_reason, report_oom
from hpclab_hub.backends.local.resources import Allocation, ResourcePool, pool_of
from hpclab_hub.backends.local.unix_accounts import UnixAccount
from hpclab_hub.backends.local.views import home_of, local_form_availability, local_use, local_whereabouts
from hpclab_hub.backends.local.waiting_line import Waiter, take_from_pool, waiting_progress
from hpclab_hub.config.model import LocalBackend, Profile
from hpclab_hub.config.units import format_duration, format_memory


class LocalServer:
    """One server on a local backend: account, cores/GPUs/memory from the pool, cgroup, process, port fence."""

    kind: ClassVar[str] = "local"
    label: ClassVar[str] = "this server"
    id_key: ClassVar[str] = "pid"
    picks_port: ClassVar[bool] = True
    waiter: Waiter | None = None  # this start's place in the pool's line (waiting_line.py)
    reclaim_reason = ""  # set when its GPU is reclaimed under pressure (reclaim.py): its end reason at the end

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.process = ServerProcess(ctx.log, ctx.log_name)
        self.allocation_state: dict[str, Any] = {}  # cores, GPUs and memory held (kept in state)
        self.account_state: dict[str, Any] = {}  # the Unix account it runs as (kept in state)
        self.cgroup_state: dict[str, Any] = {}  # its cgroup's folders (kept in state: a restarted hub finds them)
        self.port = 0  # the port fenced for its account (kept in state)
        self._early_signal_sent = False  # SIGUSR2 sent for this start's wall time
        self._oom_kills_seen = 0
        self._disk_env: dict[str, str] = {}  # HPCLAB_DISK_* of this start (quotas.disk)
        self._stopping_from_poll = False

    # --- what it runs as and with -----------------------------------------------------------

    @property
    def backend(self) -> LocalBackend:
        backend = self.ctx.deployment.backends[self.ctx.profile.backend]
        assert isinstance(backend, LocalBackend)
        return backend

    @property
    def owner_key(self) -> str:
        """Who holds an allocation: user plus server name, so named servers are distinct."""
        return f"{self.ctx.user_name}/{self.ctx.name}"

    def _known_profile(self) -> bool:
        """Whether the server's profile is still in the YAML (a server whose profile left holds nothing in a pool)."""
        return bool(self.ctx.profile_slug and self.ctx.deployment.profile(self.ctx.profile_slug))

    @property
    def pool(self) -> ResourcePool:
        return pool_of(self.ctx.deployment, self.ctx.profile)

    @property
    def account(self) -> UnixAccount | None:
        """The account of the running (or last) server."""
        if not self.account_state:
            return None
        fields = {key: self.account_state[key] for key in ("name", "uid", "gid", "home")}
        return UnixAccount(**fields, groups=tuple(self.account_state["groups"]))

    @property
    def cgroup(self) -> ServerCgroup | None:
        return ServerCgroup.from_state(self.cgroup_state)

    # --- state across hub restarts ----------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.process.pid:
            state["pid"] = self.process.pid
        if self.allocation_state:
            state["allocation"] = dict(self.allocation_state)
        if self.account_state:
            state["account"] = dict(self.account_state)
        if self.cgroup_state:
            state["cgroup"] = dict(self.cgroup_state)
        if self.port:
            state["port"] = self.port
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.process = ServerProcess(self.ctx.log, self.ctx.log_name, int(state.get("pid", 0)))
        self.allocation_state = dict(state.get("allocation", {}))
        self.account_state = dict(state.get("account", {}))
        self.cgroup_state = dict(state.get("cgroup", {}))
        self.port = int(state.get("port", 0))
        if self.process.pid and self.allocation_state and self._known_profile():
            allocation = Allocation.from_state(self.allocation_state)
            if "memory" not in self.allocation_state:  # started before memory was pooled: it holds its profile's limit
                allocation = Allocation(allocation.cpu_ids, allocation.gpu_ids, self.ctx.profile.memory or 0)
            self.pool.claim(self.owner_key, allocation)

    def clear_state(self) -> None:
        self._end_cgroup()
        self._unfence_port()
        if self._known_profile():
            self.pool.release(self.owner_key)
        self.process = ServerProcess(self.ctx.log, self.ctx.log_name)
        self.allocation_state = {}
        self.account_state = {}

    def holds_server(self) -> bool:
        return bool(self.process.pid)

    def running_note(self) -> str:
        return ""

    # --- what the pages show (views.py) ---------------------------------------------------------

    async def availability(self, profiles: list[Profile]) -> dict[str, Availability]:
        return local_form_availability(self.ctx.deployment, profiles)

    async def whereabouts(self) -> Whereabouts:
        return local_whereabouts(self)

    @classmethod
    async def measure(cls, servers: list[LocalServer]) -> list[ServerUse]:
        return [await asyncio.to_thread(local_use, server) for server in servers]

    async def settle(self, engine: Any, row_id: int, job_id: str) -> None:
        """Nothing to add: the hub measured a local server itself."""

    def home(self) -> str:
        return home_of(self.ctx.user_name)

    async def cert_alt_names(self) -> list[str]:
        return []  # it runs here: JupyterHub's own names (localhost, the loopback) are the ones

    # --- environment --------------------------------------------------------------------------

    def environment(self, hub_env: dict[str, str], profile_env: dict[str, str]) -> dict[str, str]:
        """The hub's few kept variables, the account's, the profile's, the allocation's: nothing else of the hub's."""
        return server_environment(
            self.ctx, self.account, Allocation.from_state(self.allocation_state), self._disk_env, hub_env, profile_env
        )

    # --- start --------------------------------------------------------------------------------

    async def refusals(self, profile: Profile) -> Refusals:
        return Refusals(blocked=local_blocked(profile, pool_of(self.ctx.deployment, profile)))

    async def start(self, launch: Launch) -> tuple[str, int]:
        """Account, cores/GPUs, cgroup, then the server process and its port fence; everything given back if a step fails."""
        ctx, profile = self.ctx, self.ctx.profile
        account = await asyncio.to_thread(prepare_account, ctx, self.backend)  # useradd may take a while: not in the loop
        self.account_state = {**account.__dict__, "groups": list(account.groups)}
        self._disk_env = await asyncio.to_thread(set_disk_quota, ctx, account)
        pool = self.pool
        allocation = await take_from_pool(self, pool)  # at once, or after its turn in line (priorities), or 409
        self.allocation_state = allocation.as_state()
        try:
            group = await asyncio.to_thread(make_cgroup, ctx, self.backend, pool, account, allocation)
        except Exception:
            pool.release(self.owner_key)
            self.allocation_state = {}
            raise
        self.cgroup_state = group.as_state() if group else {}
        ctx.start_metrics()
        ctx.start_wall_clock()
        ctx.end_reason = self.reclaim_reason = ""
        self._early_signal_sent = False
        self._oom_kills_seen = 0
        ctx.log.info(
            "Starting %s with profile %s as %s: cpus %s, memory %s, gpus %s, limits %s",
            ctx.log_name,
            profile.slug,
            account.name,
            list(allocation.cpu_ids),
            format_memory(profile.memory) if profile.memory else "unlimited",
            list(allocation.gpu_ids) or "none",
            f"cgroup v{group.version}" if group else "best effort (no cgroup)",
        )
        try:
            await self._spawn(launch, account, group, allocation)
            self.account_state = {**self.account_state, "pid_started": process_start(self.process.pid)}
            await wait_listening(self.process, launch.ip, launch.port, self.ctx.http_timeout)
            await self._fence_port(launch.port)
            return launch.ip, launch.port
        except BaseException:
            await self.process.stop(now=True)
            await asyncio.to_thread(self._end_cgroup)
            pool.release(self.owner_key)
            self.allocation_state = {}
            raise

    async def _spawn(self, launch: Launch, account: UnixAccount, group: ServerCgroup | None, allocation: Allocation) -> None:
        env = self.environment(launch.hub_env, launch.profile_env)
        mounts = private_mounts(self.ctx, self.backend, self.account, self.pool, launch.profile_env)
        await start_process(
            self.process,
            self.ctx.profile.backend,
            self.backend,
            launch.command,
            env,
            account,
            group,
            allocation,
            self.ctx.profile.memory,
            mounts,
            self.ctx.log,
        )

    async def _fence_port(self, port: int) -> None:
        """Only the server's own account and the hub's may connect to its port (one_door.py); else it must not run."""
        door, uid = current_door(), self.account_state.get("uid")
        if door is None or uid is None:
            return
        try:
            await asyncio.to_thread(door.add_server, port, int(uid))
        except (DoorError, OSError, subprocess.TimeoutExpired) as failed:
            raise RuntimeError(f"could not close {self.ctx.log_name}'s port {port} to other accounts: {failed}") from None
        self.port = port

    def _unfence_port(self) -> None:
        """The port fence of a server that ended is removed (stopped by the hub, or ended by itself)."""
        door, uid = current_door(), self.account_state.get("uid")
        if door is None or uid is None or not self.port:
            return
        try:
            door.remove_server(self.port, int(uid))
        except (DoorError, OSError, subprocess.TimeoutExpired) as failed:
            self.ctx.log.warning("One door: could not forget port %s: %s", self.port, failed)
        self.port = 0

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        async for event in waiting_progress(self):  # in line for a GPU or memory: where it stands, and why
            yield event
        profile = self.ctx.profile
        allocation = Allocation.from_state(self.allocation_state)
        cpus = ",".join(map(str, allocation.cpu_ids)) or "…"
        gpus = ",".join(allocation.gpu_ids) or "none"
        memory = format_memory(profile.memory) if profile.memory else "no limit"
        yield {"progress": 20, "message": f"Profile {profile.display_name}: CPUs {cpus}, memory {memory}, GPUs {gpus}"}
        yield {"progress": 50, "message": "Starting JupyterLab on this server…"}

    # --- poll, stop, extend -----------------------------------------------------------------------

    async def stop(self, now: bool = False) -> None:
        """Stop the server, then everything else its cgroup still holds; its port opens to no one."""
        if self.waiter is not None:
            self.waiter.leave = True  # a start stopped while it waits in line leaves the line
        await self.process.stop(now=now)
        await asyncio.to_thread(self._end_cgroup)  # freezing and killing may wait: not in the event loop
        await asyncio.to_thread(self._unfence_port)

    async def extend(self, seconds: int) -> None:
        """Locally the hub's own deadline is all there is (the spawner moves it): the early save signal moves with it."""
        self._early_signal_sent = False

    async def poll(self) -> int | None:
        """Exit status if the server is gone; stops it at its wall time, after SIGUSR2 ``save_before`` ahead.

        The same early signal as SLURM's ``--signal=B:USR2@N``: JupyterLab saves every open document.
        Checked every ``poll_interval`` seconds (backends.*.poll_interval), so both may come that late.
        Also reports processes the kernel killed for going over the memory limit.
        """
        ctx, group = self.ctx, self.cgroup
        if self.process.proc is None and self.process.pid and not self._stopping_from_poll:  # re-adopted: still ours?
            gone = foreign_reason(self.process.pid, group, (self.account_state or {}).get("pid_started"))
            if gone:
                ctx.log.info(
                    "%s: pid %s is not its server any more (%s): the server is gone", ctx.log_name, self.process.pid, gone
                )
                self.process.pid = 0  # never signal a process that is not ours
                self.clear_state()
                return 0
            if not self.account_state and os.geteuid() == 0:
                ctx.log.warning("Stopping %s: it was started before servers ran as their own accounts", ctx.log_name)
                await self._stop_from_poll()
                self.clear_state()
                return 0
        self._report_oom(group)
        status = self.process.poll()
        if status is not None:
            self.clear_state()
            return status
        if not ctx.job_end_epoch or self._stopping_from_poll:
            return None
        left = ctx.job_end_epoch - time.time()
        if left <= 0:
            limit = format_duration(ctx.walltime_limits()[0] or 0)  # with its extensions: what the user last saw
            ctx.end_reason = self.reclaim_reason or f"the server reached its time limit ({limit}) and was stopped."
            ctx.log.info("Stopping %s: wall time %s is over", ctx.log_name, limit)
            await self._stop_from_poll()
            return 0
        if left <= (ctx.deployment.walltime.save_before or 0) and not self._early_signal_sent:
            self._early_signal_sent = True
            with contextlib.suppress(ProcessLookupError):  # just exited: the next poll reports it
                os.kill(self.process.pid, EARLY_SIGNAL)
                ctx.log.info("Sent %s to %s: %.0f s of wall time left", EARLY_SIGNAL.name, ctx.log_name, left)
        return None

    async def _stop_from_poll(self) -> None:
        self._stopping_from_poll = True
        try:
            await self.stop()
        finally:
            self._stopping_from_poll = False

    def _report_oom(self, group: ServerCgroup | None) -> None:
        """Log each kernel OOM kill in this server's cgroup (the server's output goes to the same log)."""
        profile = self.ctx.profile if self._known_profile() else None
        self._oom_kills_seen = report_oom(self.ctx, group, self._oom_kills_seen, profile.memory if profile else None)

    def _end_cgroup(self) -> None:
        """Kill whatever is left in the server's cgroup (setsid'd or double-forked processes too) and remove it."""
        group = self.cgroup
        if group is None:
            return
        left = group.kill_all()
        if left:
            self.ctx.log.warning("Processes %s of %s survived SIGKILL; cgroup kept", sorted(left), self.ctx.log_name)
            return
        group.remove()
        self.cgroup_state = {}
