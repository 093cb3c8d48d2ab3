"""Local backend: JupyterLab as a process on the hub's machine, under the user's own Unix account.

Each server runs as its person's account (created on first start, or an existing one) with a clean
environment, inside its own cgroup: the kernel enforces the profile's memory over all the server's
processes, its cores as a cpuset, a process limit and the GPU assignment, and stopping the server
kills everything in the group. See docs/admin-guide.md, "Security model". A hub without root runs
servers as its own account for one person (trial.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import glob
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from hpclab.walltime_signal import EARLY_SIGNAL
from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Dict, HasTraits

from hpclab_hub.backends.local.cgroups import NICE_WEIGHT, CgroupUnavailable, ServerCgroup, ServerLimits, device_numbers, group_name
from hpclab_hub.config.model import Profile
from hpclab_hub.config.units import format_duration, format_memory
from hpclab_hub.backends.local.disk_quota import DiskQuotaUnavailable, set_home_quota
from hpclab_hub.backends.local.resources import Allocation, NoFreeGPU, PoolFull, ResourcePool, pool_for, pool_memory
from hpclab_hub.backends.local.server_namespace import PrivateMounts
from hpclab_hub.backends.local.unix_accounts import AccountUnavailable, UnixAccount, ensure_home, resolve_account

def _process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


#: What the server's PATH holds besides the hub's own bin folder (the hub's PATH is not passed on).
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def _admin_named_paths(env: dict[str, str]) -> list[str]:
    """Existing folders an admin's variables name (JUPYTER_PATH=/srv/kernels:…, SSL_CERT_FILE=/etc/…/ca.pem → its
    folder): a server's private /tmp must not hide what the YAML points it at."""
    found = []
    for value in env.values():
        for part in value.split(os.pathsep):
            path = Path(part)
            if path.is_absolute() and path.exists():
                found.append(str(path if path.is_dir() else path.parent))
    return found


def _server_preexec(account: UnixAccount, cgroup: ServerCgroup | None, cpu_ids: tuple[int, ...], memory: int | None, nice: int = 0,
                    mounts: PrivateMounts | None = None):
    """The function run in the child before exec: join the cgroup, lower its CPU priority by ``nice``, enter a mount
    namespace with a private /tmp, /dev/shm and /proc (``mounts``, as root), drop to the account, enter its home.

    Without a cgroup (``limits: best-effort``) cores are pinned with affinity and memory is an
    RLIMIT_DATA per process, which a user can work around; the cgroup is what the kernel enforces.
    """
    switch = os.geteuid() == 0 and account.uid != os.geteuid()

    def preexec() -> None:
        if cgroup is not None:
            cgroup.attach()
        else:
            os.sched_setaffinity(0, cpu_ids)
            if memory:
                resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        if nice:  # before dropping to the account, which may not lower it again (RLIMIT_NICE)
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), nice))
        if mounts is not None and switch:
            try:
                mounts.enter()
            except OSError as error:  # the hub only learns 'Exception occurred in preexec_fn': the reason goes to its log
                os.write(2, f"hpclab: cannot make the server's private /tmp and /dev/shm: {error} "
                            "(backends.<name>.private_tmp: false turns them off)\n".encode())
                raise
        os.umask(0o077)  # what the server creates is its account's alone (a group-shared folder can set its own mode)
        if switch:
            os.setgroups(list(account.groups))
            os.setgid(account.gid)
            os.setuid(account.uid)
            if os.getuid() == 0 or os.geteuid() == 0:  # never exec a user's server with root left over
                raise PermissionError("the server would still run as root")
        os.chdir(account.home)

    return preexec


class LocalServerMixin(HasTraits):
    """The local-backend half of HPCLabSpawner: jupyterhub-singleuser on this machine, as the user's own account.

    Its ``local_*`` methods are what HPCLabSpawner's start/stop/poll/progress/get_env call for a
    server whose profile names a local backend; state methods chain with the SLURM half.
    """

    allocation_state = Dict(help="Cores and GPUs held by the running server (kept in state).")
    account_state = Dict(help="Unix account and home the server runs as (kept in state).")
    cgroup_state = Dict(help="The server's cgroup directories (kept in state, so a restarted hub finds them).")
    _stopping_from_poll = False  # stop() polls too: no second stop from inside the first
    _early_signal_sent = False  # SIGUSR2 already sent for this start
    _oom_kills_seen = 0  # OOM kills already reported for this start
    _disk_env: Mapping[str, str] = MappingProxyType({})  # HPCLAB_DISK_* of this start (quotas.disk)

    @property
    def owner_key(self) -> str:
        """Who holds an allocation: user plus server name, so named servers are distinct."""
        return f"{self.user.name}/{self.name}"

    # --- profile and pool -----------------------------------------------------------------------

    def _on_known_local_profile(self) -> bool:
        """Whether the current server's profile is still in the YAML and names a local backend."""
        return bool(self.profile_slug and self.deployment.profile(self.profile_slug)) and self.backend_kind == "local"

    def pool(self, profile: Profile) -> ResourcePool:
        """The core/GPU pool of the profile's backend."""
        backend = self.deployment.backends[profile.backend]
        return pool_for(profile.backend, backend.cpus, backend.gpus, pool_memory(backend.memory, backend.memory_reserved))

    @property
    def account(self) -> UnixAccount | None:
        """The account of the running (or last) server."""
        if not self.account_state:
            return None
        fields = {key: self.account_state[key] for key in ("name", "uid", "gid", "home")}
        return UnixAccount(**fields, groups=tuple(self.account_state["groups"]))

    @property
    def home_dir(self) -> str:
        """Working folder of this user's server: the account's home unless backends.*.home_dir says otherwise."""
        account = self.account
        return account.home if account else ""

    @property
    def cgroup(self) -> ServerCgroup | None:
        return ServerCgroup.from_state(self.cgroup_state)

    def uses_cgroups(self) -> bool:
        """Whether limits are the kernel's (cgroups) or best effort (affinity and rlimits)."""
        mode = self.backend.limits
        return mode == "cgroups" or (mode == "auto" and os.geteuid() == 0)

    # --- state across hub restarts ----------------------------------------------------------

    def get_state(self) -> dict:
        state = super().get_state()
        if self.allocation_state:
            state["allocation"] = dict(self.allocation_state)
        if self.account_state:
            state["account"] = dict(self.account_state)
        if self.cgroup_state:
            state["cgroup"] = dict(self.cgroup_state)
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.allocation_state = state.get("allocation", {})
        self.account_state = state.get("account", {})
        self.cgroup_state = state.get("cgroup", {})
        if self.pid and self.allocation_state and self._on_known_local_profile():
            allocation = Allocation.from_state(self.allocation_state)
            if "memory" not in self.allocation_state:  # started before memory was pooled: it holds its profile's limit
                allocation = Allocation(allocation.cpu_ids, allocation.gpu_ids, self.profile.memory or 0)
            self.pool(self.profile).claim(self.owner_key, allocation)

    def clear_state(self) -> None:
        self._end_cgroup()
        super().clear_state()
        if self._on_known_local_profile():
            self.pool(self.profile).release(self.owner_key)
        self.allocation_state = {}
        self.account_state = {}

    # --- process ------------------------------------------------------------------------------

    def user_env(self, env: dict) -> dict:
        account = self.account
        env["USER"] = env["LOGNAME"] = account.name if account else self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        return env

    def local_env(self) -> dict:
        """The server's whole environment: the hub's few kept variables, the profile's, the allocation's."""
        env = LocalProcessSpawner.get_env(self)
        profile = self.profile
        allocation = Allocation.from_state(self.allocation_state)
        env["PATH"] = f"{Path(sys.executable).parent}:{SYSTEM_PATH}"  # the hub's venv: jupyterhub-singleuser, hpclab-kernel
        env.update(self.profile_env())
        if profile.local:
            env.update(profile.local.environment)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(allocation.gpu_ids)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as nvidia-smi does
        if self.job_end_epoch:
            env["HPCLAB_JOB_END_TIME"] = str(int(self.job_end_epoch))
        env.update(self._disk_env)
        return env

    def make_preexec_fn(self, name: str):
        allocation = Allocation.from_state(self.allocation_state)
        return _server_preexec(self.account, self.cgroup, allocation.cpu_ids, self.profile.memory, self.backend.server_nice,
                               self._private_mounts())

    def _private_mounts(self) -> PrivateMounts | None:
        """The server's private /tmp, /dev/shm and /proc (backends.*.private_tmp), with the folders it needs kept in."""
        if not self.backend.private_tmp or os.geteuid() != 0:
            return None
        # what the deployment put under /tmp stays as the host has it (test hubs do): the folder of the homes (others'
        # stay 0700, not hidden), the hub's state (0700), its Python and source, examples, GPU nodes, kernels
        keep = [self.home_dir, str(Path(self.home_dir).parent), str(self.deployment.hub.data_dir), sys.prefix, sys.base_prefix,
                str(Path(sys.executable).resolve().parent), str(Path(__file__).resolve().parents[4]),
                str(self.deployment.examples.source_dir)]
        keep += [str(Path(self.backend.gpu_device(gpu)).parent) for gpu in self.pool(self.profile).gpu_ids]
        for kernel in self.deployment.kernels.values():
            if kernel.runtime is not None:
                keep += [str(path) for path in (kernel.runtime.prefix, kernel.runtime.image and kernel.runtime.image.parent) if path]
        keep += _admin_named_paths(self._admin_environment())
        return PrivateMounts(size=self.profile.memory, hide_processes=self.backend.hide_processes, keep=tuple(keep))

    def _admin_environment(self) -> dict[str, str]:
        """The variables the YAML gives this server (backend, profile, the profile's local part): the admin's, never a user's."""
        env = self.profile_env()
        if self.profile.local:
            env.update(self.profile.local.environment)
        return env

    def move_certs(self, paths):
        return paths

    def _resolve_account(self) -> UnixAccount:
        """The user's Unix account (created on first start in mode create) with its home folder ready."""
        accounts = self.backend.accounts
        try:
            admins = self.deployment.hub.admin_users
            account = resolve_account(self.user.name, accounts.mode, accounts.prefix, accounts.home_base, self.backend.home_dir,
                                      only_user=admins[0] if admins else None)  # hub-user: the trial's one person
            ensure_home(account)
        except AccountUnavailable as refused:
            self.record_failure("account")
            self.log.warning("No account for %s: %s", self._log_name, refused)
            raise web.HTTPError(refused.status, str(refused)) from None
        except OSError as error:
            self.record_failure("account")
            raise web.HTTPError(500, f"Could not prepare the home folder of {self.user.name}: {error}") from None
        return account

    def _set_disk_quota(self, account: UnixAccount) -> dict[str, str]:
        """The person's home quota (quotas.disk) set in the kernel; the server's HPCLAB_DISK_* variables."""
        disk = self.deployment.quotas.disk
        limit = disk.limit_for(self.user.name, self.user_groups())
        if limit is None:
            return {}
        if os.geteuid() != 0:
            self.log.warning("%s: quotas.disk is not enforced: the hub runs without root", self._log_name)
            return {}
        try:
            env = set_home_quota(self.home_dir, account.uid, account.gid, limit)
        except DiskQuotaUnavailable as error:
            self.record_failure("disk_quota")
            raise web.HTTPError(
                500, f"The home folder's disk quota ({format_memory(limit)}, quotas.disk) cannot be set: {error}. "
                "An admin can remove quotas.disk to run without it.",
            ) from None
        self.log.info("%s: home %s limited to %s (%s)", self._log_name, self.home_dir, format_memory(limit),
                      "btrfs qgroup" if "HPCLAB_DISK_USED_FILE" in env else "user quota")
        return env

    def _server_limits(self, allocation: Allocation) -> ServerLimits:
        """The allocation as cgroup limits: cores, memory, processes, and every pool GPU not assigned denied."""
        backend = self.backend
        allowed = set()
        for gpu in allocation.gpu_ids:
            numbers = device_numbers(backend.gpu_device(gpu))
            if numbers is None:
                self.log.warning("GPU %s of %s has no device node at %s (backends.*.gpu_devices)", gpu, self._log_name, backend.gpu_device(gpu))
            allowed.add(numbers)
        nodes = {backend.gpu_device(gpu) for gpu in self.pool(self.profile).gpu_ids}
        nodes.update(path for path in glob.glob("/dev/nvidia*") if path[len("/dev/nvidia"):].isdigit())  # GPUs outside the pool too
        denied = {device_numbers(path) for path in nodes} - allowed - {None}
        return ServerLimits(allocation.cpu_ids, self.profile.memory, backend.pids_limit, tuple(sorted(denied)),
                            allowed_devices=tuple(sorted(allowed - {None})), servers_cpu_shares=NICE_WEIGHT[backend.server_nice])

    def _make_cgroup(self, account: UnixAccount, allocation: Allocation) -> ServerCgroup | None:
        if not self.uses_cgroups():
            return None
        name = group_name(str(self.deployment.hub.data_dir), account.name, self.name)
        try:
            group = ServerCgroup.create(name, self._server_limits(allocation))
        except CgroupUnavailable as error:
            self.record_failure("cgroup")
            raise web.HTTPError(
                500,
                f"This server cannot enforce the profile's limits: {error}. "
                "An admin can set backends.<name>.limits: best-effort to run without kernel-enforced limits.",
            ) from None
        for note in group.notes:
            self.log.warning("%s: %s", self._log_name, note)
        leftovers = group.kill_all()  # processes of an earlier server of this user the hub lost track of
        if leftovers:
            raise web.HTTPError(500, f"Processes {sorted(leftovers)} of an earlier server would not stop")
        return group

    def _end_cgroup(self) -> None:
        """Kill whatever is left in the server's cgroup (setsid'd or double-forked processes too) and remove it."""
        group = self.cgroup
        if group is None:
            return
        left = group.kill_all()
        if left:
            self.log.warning("Processes %s of %s survived SIGKILL; cgroup kept", sorted(left), self._log_name)
            return
        group.remove()
        self.cgroup_state = {}

    async def local_start(self):
        """Account, cores/GPUs, cgroup, then the server process; everything is given back if any step fails."""
        profile = self.profile
        account = await asyncio.to_thread(self._resolve_account)  # useradd may take a while: not in the event loop
        self.account_state = {**account.__dict__, "groups": list(account.groups)}
        self._disk_env = await asyncio.to_thread(self._set_disk_quota, account)
        pool = self.pool(profile)
        try:
            allocation = pool.allocate(self.owner_key, profile.cpus, profile.gpus, profile.memory or 0)
        except PoolFull as exc:
            self.record_failure("no_free_gpu" if isinstance(exc, NoFreeGPU) else "no_free_memory")
            raise web.HTTPError(409, str(exc)) from None
        self.allocation_state = allocation.as_state()
        try:
            group = await asyncio.to_thread(self._make_cgroup, account, allocation)
        except Exception:
            pool.release(self.owner_key)
            self.allocation_state = {}
            raise
        self.cgroup_state = group.as_state() if group else {}
        self.start_metrics()
        self.start_wall_clock()
        self.end_reason = ""
        self._early_signal_sent = False
        self._oom_kills_seen = 0
        self.log.info(
            "Starting %s with profile %s as %s: cpus %s, memory %s, gpus %s, limits %s",
            self._log_name,
            profile.slug,
            account.name,
            list(allocation.cpu_ids),
            format_memory(profile.memory) if profile.memory else "unlimited",
            list(allocation.gpu_ids) or "none",
            f"cgroup v{group.version}" if group else "best effort (no cgroup)",
        )
        try:
            try:
                ip, port = await LocalProcessSpawner.start(self)
            except PermissionError as error:
                raise web.HTTPError(
                    500,
                    f"The Unix account {account.name} cannot run {self.cmd[0]} ({error.strerror}): the hub's Python and "
                    "its folders must be readable and searchable by other users (e.g. not under /root).",
                ) from None
            self.account_state = {**self.account_state, "pid_started": _process_start(self.pid)}
            await self._wait_listening(ip, port)
            return ip, port
        except Exception:
            await asyncio.to_thread(self._end_cgroup)
            pool.release(self.owner_key)
            self.allocation_state = {}
            raise

    async def local_stop(self, now: bool = False) -> None:
        """Stop the server, then everything else its cgroup still holds."""
        await LocalProcessSpawner.stop(self, now=now)
        await asyncio.to_thread(self._end_cgroup)  # freezing and killing may wait: not in the event loop

    async def local_poll(self):
        """Exit status if the server is gone; stops it at its wall time, after SIGUSR2 ``save_before`` ahead.

        The same early signal as SLURM's ``--signal=B:USR2@N``: JupyterLab saves every open document.
        Checked every ``poll_interval`` seconds (backends.*.poll_interval), so both may come that late.
        Also reports processes the kernel killed for going over the memory limit.
        """
        group = self.cgroup
        if self.proc is None and self.pid and not self._stopping_from_poll:  # re-adopted after a restart: still ours?
            gone = self._readopted_pid_is_foreign(group)
            if gone:
                self.log.info("%s: pid %s is not its server any more (%s): the server is gone", self._log_name, self.pid, gone)
                self.pid = 0  # never signal a process that is not ours
                self.clear_state()
                return 0
            if not self.account_state and os.geteuid() == 0:
                self.log.warning("Stopping %s: it was started before servers ran as their own accounts", self._log_name)
                self._stopping_from_poll = True
                try:
                    await LocalProcessSpawner.stop(self)
                finally:
                    self._stopping_from_poll = False
                self.clear_state()
                return 0
        self._report_oom(group)
        status = await LocalProcessSpawner.poll(self)
        if status is not None or not self.job_end_epoch or self._stopping_from_poll:
            return status
        left = self.job_end_epoch - time.time()
        if left <= 0:
            limit = format_duration(self.walltime_limits()[0] or 0)  # with its extensions: what the user last saw
            self.end_reason = f"the server reached its time limit ({limit}) and was stopped."
            self.log.info("Stopping %s: wall time %s is over", self._log_name, limit)
            self._stopping_from_poll = True
            try:
                await self.stop()
            finally:
                self._stopping_from_poll = False
            return 0
        if left <= (self.deployment.walltime.save_before or 0) and not self._early_signal_sent:
            self._early_signal_sent = True
            with contextlib.suppress(ProcessLookupError):  # just exited: the next poll reports it
                os.kill(self.pid, EARLY_SIGNAL)
                self.log.info("Sent %s to %s: %.0f s of wall time left", EARLY_SIGNAL.name, self._log_name, left)
        return None

    def _readopted_pid_is_foreign(self, group: ServerCgroup | None) -> str:
        """Why the stored pid is no longer this server ('' if it still is): after a reboot pids are reused."""
        if group is not None:
            if not group.exists():
                return "its cgroup is gone (a reboot?)"
            if not group.contains(self.pid):
                return "it is not in the server's cgroup"
            return ""
        started = self.account_state.get("pid_started") if self.account_state else None
        if started is not None and _process_start(self.pid) != started:
            return "another process has that pid now"
        return ""

    def _report_oom(self, group: ServerCgroup | None) -> None:
        """Log each kernel OOM kill in this server's cgroup (the server's output goes to the same log)."""
        if group is None:
            return
        kills = group.oom_kills()
        if kills > self._oom_kills_seen:
            limit = format_memory(self.profile.memory) if self.profile_slug and self.profile.memory else "its limit"
            self.log.warning(
                "Out of memory: the kernel killed %d process(es) of %s, which went over its memory limit (%s)",
                kills - self._oom_kills_seen, self._log_name, limit,
            )
            self._oom_kills_seen = kills

    async def _wait_listening(self, ip: str, port: int) -> None:
        """Return as soon as the server accepts connections (polled every 0.1 s), or fail at once if it exits.

        JupyterHub's own readiness check backs off randomly up to seconds between tries; answering it
        only after the port is open saves that wait, and a crashed server is reported with its exit code.
        """
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

    async def local_progress(self):
        profile = self.profile
        allocation = Allocation.from_state(self.allocation_state)
        cpus = ",".join(map(str, allocation.cpu_ids)) or "…"
        gpus = ",".join(allocation.gpu_ids) or "none"
        memory = format_memory(profile.memory) if profile.memory else "no limit"
        yield {"progress": 20, "message": f"Profile {profile.display_name}: CPUs {cpus}, memory {memory}, GPUs {gpus}"}
        yield {"progress": 50, "message": "Starting JupyterLab on this server…"}
