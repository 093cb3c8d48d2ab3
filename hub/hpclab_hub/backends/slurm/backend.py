"""SLURM backend: JupyterLab inside a SLURM job submitted as the user, with live queue feedback.

One job per server (sbatch as the user), followed in one shared squeue per cluster; the job's server
reports its port to the hub (port_report.py) and the hub connects once it answers. SLURM's own words
(pending reasons, why a job ended, what sbatch refused) reach the user on the progress page.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from tornado import web

from hpclab_hub.backends import Availability, Launch, Refusals, ServerContext, ServerUse, Whereabouts
from hpclab_hub.backends.slurm import accounting
from hpclab_hub.backends.slurm.availability import ClusterState, cluster_time_cap, slurm_profile_availability, too_long_refusal
from hpclab_hub.backends.slurm.batch_script import build_batch_script, job_spec
from hpclab_hub.backends.slurm.client import SlurmClient, extend_job
from hpclab_hub.backends.slurm.ending import describe_end, describe_pending, output_tail
from hpclab_hub.backends.slurm.errors import SlurmError
from hpclab_hub.backends.slurm.node_prefix import job_command, job_environment
from hpclab_hub.backends.slurm.ownership import LIVE_JOBS, any_slurm_backend, check_orphans_once, hub_id
from hpclab_hub.backends.slurm.queue import JobQueue, queue_for
from hpclab_hub.backends.slurm.views import node_alt_names, slurm_uses, slurm_whereabouts
from hpclab_hub.backends.slurm.will_start import never_starts
from hpclab_hub.config.model import Profile, SlurmBackend
from hpclab_hub.ops import metrics

#: what the job inherits from the hub's environment besides the hub's kept variables
SLURM_ENV_KEEP = ("PATH", "VIRTUAL_ENV")


class SlurmServer:
    """One server as one SLURM job: submitted as the user, followed in the shared queue, cancelled on stop."""

    kind: ClassVar[str] = "slurm"
    label: ClassVar[str] = "SLURM cluster"
    id_key: ClassVar[str] = "job_id"
    picks_port: ClassVar[bool] = False

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.job_id = ""  # the running server's job (kept in state)
        self.expected_start = ""  # when SLURM expected the job to start, asked before it was submitted (sbatch --test-only)
        self.port_reported: asyncio.Future[int] | None = None
        self.progress_line, self.progress_percent = "", 0
        self._ready = False

    # --- wiring -----------------------------------------------------------------------------

    @property
    def backend(self) -> SlurmBackend:
        """The profile's SLURM backend, or any of the YAML's for a server whose profile left it."""
        slug = self.ctx.profile_slug
        if slug and self.ctx.deployment.profile(slug):
            backend = self.ctx.deployment.backends[self.ctx.profile.backend]
            if isinstance(backend, SlurmBackend):
                return backend
        return any_slurm_backend(self.ctx.deployment)

    @property
    def client(self) -> SlurmClient:
        return SlurmClient.for_backend(self.backend)

    @property
    def queue(self) -> JobQueue:
        return queue_for(self.client, self.backend.poll_interval)

    def home(self) -> str:
        try:
            return pwd.getpwnam(self.ctx.user_name).pw_dir
        except KeyError:
            raise web.HTTPError(
                400, f"There is no Unix account named {self.ctx.user_name!r}: SLURM jobs run as the user's own account."
            ) from None

    # --- state --------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {"job_id": self.job_id} if self.job_id else {}

    def load_state(self, state: dict[str, Any]) -> None:
        self.job_id = str(state.get("job_id", ""))

    def clear_state(self) -> None:
        LIVE_JOBS.discard(self.job_id)
        self.job_id = ""

    def holds_server(self) -> bool:
        return bool(self.job_id)

    def running_note(self) -> str:
        return f"SLURM job {self.job_id}" if self.job_id else ""

    # --- what the pages show (views.py) ---------------------------------------------------------

    async def availability(self, profiles: list[Profile]) -> dict[str, Availability]:
        """One cluster answer for all of this backend's profiles."""
        answer = await self.ctx.cluster_state(profiles[0].backend)
        return {p.slug: slurm_profile_availability(p, self.ctx.deployment.backends[p.backend], answer) for p in profiles}

    async def whereabouts(self) -> Whereabouts:
        return await slurm_whereabouts(self, starting=not self._ready)

    @classmethod
    async def measure(cls, servers: list[SlurmServer]) -> list[ServerUse]:
        return await slurm_uses(servers)

    async def settle(self, engine: Any, row_id: int, job_id: str) -> None:
        """SLURM's own figures for the ended job (sacct) into its history row (accounting.py)."""
        await accounting.settle(self.client, engine, row_id, job_id, self.ctx.log)

    async def cert_alt_names(self) -> list[str]:
        return node_alt_names(await self.client.run(["scontrol", "show", "node", "-o"]))

    def environment(self, hub_env: dict[str, str], profile_env: dict[str, str]) -> dict[str, str]:
        """The job's environment: the hub's kept variables (PATH, the venv), the profile's, the hub API URL."""
        env = dict(hub_env)
        env.update({key: os.environ[key] for key in SLURM_ENV_KEEP if key in os.environ})
        env.update(profile_env)
        if self.backend.hub_api_url:
            env["JUPYTERHUB_API_URL"] = self.backend.hub_api_url
        return env

    # --- before the start -----------------------------------------------------------------------

    async def refusals(self, profile: Profile) -> Refusals:
        """A partition missing, down, without nodes or GPUs; a wall time above the cluster's cap; a job SLURM never starts.

        The first is the form's rule for disabled profiles (a busy partition blocks nothing: the job
        waits with SLURM's reason); the cap is the partition's MaxTime or its QoS's MaxWall, kept for
        extensions. A cluster that cannot answer refuses nothing: sbatch's own message decides.
        """
        backend = self.ctx.deployment.backends[profile.backend]
        assert isinstance(backend, SlurmBackend)
        answer: ClusterState | str = await self.ctx.cluster_state(profile.backend)
        cap = await cluster_time_cap(profile, backend, answer)
        blocked, too_long = slurm_profile_availability(profile, backend, answer).blocked, too_long_refusal(profile, cap)
        if not (blocked or too_long or isinstance(answer, str)):
            blocked = await self.never_starts(profile, backend)
        return Refusals(blocked, too_long, cap.seconds if cap else 0, cap.source if cap else "")

    async def never_starts(self, profile: Profile, backend: SlurmBackend) -> str:
        """Why SLURM would never start ``profile``'s job as asked (will_start.py); keeps the start SLURM expects."""
        try:
            home = pwd.getpwnam(self.ctx.user_name).pw_dir
        except KeyError:  # no such account: the start says so itself
            self.expected_start = ""
            return ""
        save_before = self.ctx.deployment.walltime.save_before or 0  # "": nothing is queued, no hub tag
        spec = job_spec(profile, backend, self.ctx.user_name, home, self.ctx.name, "", save_before, *self.by_group())
        reason, self.expected_start = await never_starts(SlurmClient.for_backend(backend), self.ctx.user_name, spec)
        return reason

    def by_group(self) -> tuple[str | None, str | None]:
        """The QoS and account the person's groups give their jobs (priorities.slurm_qos, slurm_account)."""
        groups, priorities = self.ctx.user_groups(), self.ctx.deployment.priorities
        return priorities.qos_for(groups), priorities.account_for(groups)

    # --- start --------------------------------------------------------------------------------

    def report_port(self, port: int) -> None:
        """Called by the port-report API handler: the job's server will listen on ``port``."""
        if self.port_reported is not None and not self.port_reported.done():
            self.port_reported.set_result(port)

    async def start(self, launch: Launch) -> tuple[str, int]:
        """Submit the job, follow it in the shared queue, and return (node, port) once its server answers."""
        ctx = self.ctx
        ctx.end_reason = ""
        ctx.job_end_epoch = 0.0
        self._ready = False
        profile, backend = ctx.profile, self.backend
        command = job_command(backend, launch.command)  # the hub's venv, or backends.<name>.node_prefix
        this_hub = await hub_id(ctx.deployment, ctx.database, self.queue, ctx.log)
        script = build_batch_script(
            profile,
            backend,
            ctx.user_name,
            self.home(),
            command,
            ctx.name,
            this_hub,
            ctx.deployment.walltime.save_before or 0,
            *self.by_group(),
        )
        self.port_reported = asyncio.get_running_loop().create_future()
        self.progress_line, self.progress_percent = "Submitting the job to SLURM…", 5
        try:
            env = job_environment(backend, self.environment(launch.hub_env, launch.profile_env))
            self.job_id = await self.client.submit(ctx.user_name, script, env)
        except SlurmError as error:
            self.port_reported = None
            ctx.record_failure("slurm_refused")
            raise web.HTTPError(400, f"SLURM refused the job: {error.message}") from None
        LIVE_JOBS.add(self.job_id)
        ctx.start_metrics()
        ctx.log.info("Submitted SLURM job %s for %s (profile %s)", self.job_id, ctx.log_name, profile.slug)
        try:
            port, node = await self._wait_for_server()
            address = await self.client.node_address(node)  # the proxy's target: the node's NodeAddr
            await self._wait_answering(address, port)
        except BaseException as error:
            ctx.record_failure("job_failed" if isinstance(error, web.HTTPError) else "timeout")
            await self._cancel_job()
            raise
        finally:
            self.port_reported = None
        self._ready = True
        self.progress_line = f"Job {self.job_id} running on {node}; JupyterLab is starting…"
        return (address, port)

    async def _wait_for_server(self) -> tuple[int, str]:
        """Follow the job until its server reports a port; fail with SLURM's words if the job ends first."""
        assert self.port_reported is not None
        submitted = time.monotonic()
        node = ""
        while True:
            status = await self.queue.status(self.job_id)
            info = status.info
            if status.known and info is None and time.monotonic() - submitted > 2 * self.queue.max_age:
                raise web.HTTPError(500, f"SLURM job {self.job_id} disappeared from the queue before the server started.")
            if info is not None:
                if not info.active:
                    raise web.HTTPError(500, f"{describe_end(info)} The server never started. {self._output_tail()}")
                if info.state == "PENDING":
                    start = self.queue.start_times.get(self.job_id) or self.expected_start
                    self.progress_line = describe_pending(info, start, time.monotonic() - submitted)
                    self.progress_percent = 20
                elif info.node:
                    if not node:
                        self._mark_running(submitted)
                    node = info.node
                    self.progress_line = f"Job {self.job_id} running on {node}, waiting for JupyterLab to report its port…"
                    self.progress_percent = 60
            elif not status.known:
                self.progress_line = f"SLURM is not answering ({self.queue.last_error}); still waiting for job {self.job_id}"
            try:
                port = await asyncio.wait_for(asyncio.shield(self.port_reported), timeout=1.0)
            except TimeoutError:
                continue
            while not node:
                status = await self.queue.status(self.job_id, max_age=0)
                node = status.info.node if status.info else ""
                if not node:
                    await asyncio.sleep(0.2)
                else:
                    self._mark_running(submitted)
            return port, node

    async def _wait_answering(self, address: str, port: int) -> None:
        """Return once the job's server accepts connections (polled every 0.1 s), so that JupyterHub's own check
        succeeds at once instead of after its random backoff; fail with SLURM's words if the job ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ctx.http_timeout
        self.progress_line = f"Job {self.job_id} running on {address}; JupyterLab is starting on port {port}…"
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout=2)
            except (OSError, TimeoutError):
                status = await self.queue.status(self.job_id)
                if status.info is not None and not status.info.active:
                    raise web.HTTPError(
                        500, f"{describe_end(status.info)} The server never started. {self._output_tail()}"
                    ) from None
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    def _mark_running(self, submitted: float) -> None:
        """The job started: its wall clock runs from now, and its queue wait is recorded."""
        self.ctx.start_wall_clock()  # SLURM's limit counts from when the job runs
        metrics.QUEUE_WAIT.labels(self.ctx.profile_slug, self.ctx.profile.backend).observe(time.monotonic() - submitted)

    def _output_tail(self) -> str:
        path = self.backend.output.format(home=self.home(), username=self.ctx.user_name).replace("%j", self.job_id)
        return output_tail(path)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        last = None
        while not self._ready:
            if self.progress_line != last:
                last = self.progress_line
                yield {"progress": self.progress_percent, "message": last}
            await asyncio.sleep(0.5)

    # --- poll, stop, extend ---------------------------------------------------------------------

    async def poll(self) -> int | None:
        ctx = self.ctx
        if not self.job_id:
            return 0
        await check_orphans_once(ctx.deployment, ctx.database, self.client, self.queue, ctx.log)
        status = await self.queue.status(self.job_id)
        if not status.known:
            ctx.log.warning("SLURM not answering for %s (%s): assuming still running", ctx.log_name, self.queue.last_error)
            return None
        if status.info is None:
            ctx.end_reason = f"SLURM job {self.job_id} is no longer in the queue."
            return 0
        if status.info.active:
            return None
        ctx.end_reason = describe_end(status.info)
        ctx.log.info("%s: %s", ctx.log_name, ctx.end_reason)
        return 0 if status.info.state == "COMPLETED" else 1

    async def extend(self, seconds: int) -> None:
        """Raise the job's time limit to ``seconds`` (scontrol update as the hub: SLURM operator rights)."""
        try:
            await extend_job(SlurmClient.for_backend(self.backend), self.job_id, seconds)
        except SlurmError as error:
            raise web.HTTPError(500, f"SLURM did not extend job {self.job_id}: {error.message}") from None

    async def _cancel_job(self) -> None:
        if not self.job_id:
            return
        try:
            await self.client.run(self.client.as_user(self.ctx.user_name, ["scancel", self.job_id]))
        except SlurmError as error:
            self.ctx.log.warning("scancel %s failed: %s", self.job_id, error.message)

    async def stop(self, now: bool = False) -> None:
        if not self.job_id:
            return
        await self._cancel_job()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # the hub's shared listing, no fresher than its poll interval: many stops at once (a course ending, a
            # restart) ask slurmctld once per interval, not once per stop every half second
            status = await self.queue.status(self.job_id)
            if status.known and (status.info is None or not status.info.active):
                return
            await asyncio.sleep(0.5)
        self.ctx.log.warning("SLURM job %s still listed 30 s after scancel", self.job_id)
