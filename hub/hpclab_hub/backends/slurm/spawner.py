"""SLURM backend: JupyterLab inside a SLURM job submitted as the user, with live queue feedback."""

from __future__ import annotations

import asyncio
import os
import pwd
import sys
import time
from pathlib import Path

from jupyterhub import orm
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import HasTraits, Unicode

from hpclab_hub.ops import metrics
from hpclab_hub.config.model import SlurmBackend
from hpclab_hub.backends.slurm.batch_script import build_batch_script
from hpclab_hub.backends.slurm.client import SlurmClient, SlurmError
from hpclab_hub.backends.slurm.ending import describe_end, describe_pending
from hpclab_hub.backends.slurm.hub_id import ensure_hub_id
from hpclab_hub.backends.slurm.queue import JobQueue, queue_for

_LIVE_JOBS: set[str] = set()  # job ids submitted by this hub process and not yet cleared
_ORPHAN_CHECK_DONE: set[str] = set()
_HUB_IDS: dict[str, str] = {}  # database URL -> this hub's id (looked up once per process)


class SlurmServerMixin(HasTraits):
    """The SLURM half of HPCLabSpawner: one job per server (sbatch as the user), its port report, one shared squeue.

    Its ``slurm_*`` methods are what HPCLabSpawner's start/stop/poll/progress/get_env call for a
    server whose profile names a SLURM backend; state methods chain with the local half.
    """

    job_id = Unicode("", help="SLURM job id of the running server (kept in state).")
    expected_start = Unicode("", help="When SLURM expected the job to start, asked before it was submitted (sbatch --test-only).")

    port_reported: asyncio.Future | None = None
    progress_line = ""
    progress_percent = 0
    _ready = False

    #: what the job inherits from the hub's environment besides Spawner.env_keep
    SLURM_ENV_KEEP = ("PATH", "VIRTUAL_ENV")

    # --- wiring -----------------------------------------------------------------------------

    def _any_backend(self) -> SlurmBackend:
        if self.backend_kind == "slurm":
            return self.backend
        return next(b for b in self.deployment.backends.values() if b.type == "slurm")

    @property
    def client(self) -> SlurmClient:
        return SlurmClient.for_backend(self._any_backend())

    @property
    def queue(self) -> JobQueue:
        return queue_for(self.client, self._any_backend().poll_interval)

    async def hub_id(self) -> str:
        """This hub's id, written into each job's comment: from the YAML or the database (see ``hub_id.py``)."""
        hub = self.deployment.hub
        if getattr(hub, "id", None):
            return hub.id
        if hub.database_url not in _HUB_IDS:
            owned = any(row.state and row.state.get("job_id") for row in self.db.query(orm.Spawner).all())
            await self.queue.refresh(max_age=0)
            comments = [job.comment for job in self.queue.snapshot().values()]
            hub_id, origin = ensure_hub_id(self.db, hub.database_url, comments, owned)
            if origin == "adopted":
                self.log.info("SLURM hub id %s adopted from the hub's jobs (the old id, from the database URL) and kept "
                              "in the database", hub_id)
            elif origin == "new":
                self.log.info("SLURM hub id %s made and kept in the database", hub_id)
            _HUB_IDS[hub.database_url] = hub_id
        return _HUB_IDS[hub.database_url]

    def home(self) -> str:
        try:
            return pwd.getpwnam(self.user.name).pw_dir
        except KeyError:
            raise web.HTTPError(
                400, f"There is no Unix account named {self.user.name!r}: SLURM jobs run as the user's own account."
            ) from None

    # --- state ------------------------------------------------------------------------------

    def get_state(self) -> dict:
        state = super().get_state()
        if self.job_id:
            state["job_id"] = self.job_id
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.job_id = state.get("job_id", "")

    def clear_state(self) -> None:
        super().clear_state()
        _LIVE_JOBS.discard(self.job_id)
        self.job_id = ""

    # --- start ------------------------------------------------------------------------------

    def slurm_env(self) -> dict:
        """The job's environment: the hub's kept variables (PATH, the venv), the profile's, the hub API URL."""
        env = Spawner.get_env(self)
        env.update({key: os.environ[key] for key in self.SLURM_ENV_KEEP if key in os.environ})
        env.update(self.profile_env())
        if self.backend.hub_api_url:
            env["JUPYTERHUB_API_URL"] = self.backend.hub_api_url
        return env

    async def slurm_never_starts(self, profile) -> str:
        """Why SLURM would never start ``profile``'s job as asked ('' if it would, or cannot say now).

        Asked with ``sbatch --test-only`` as the user (nothing is queued): more cores, memory or GPUs
        than any node of the partition has outside its reservations is refused here, with SLURM's
        words, instead of waiting out the spawn timeout. The start SLURM expects is kept for the
        progress page.
        """
        from hpclab_hub.backends.slurm.batch_script import job_spec

        self.expected_start = ""
        try:
            home = pwd.getpwnam(self.user.name).pw_dir
        except KeyError:  # no such account: the start says so itself
            return ""
        backend = self.deployment.backends[profile.backend]
        # nothing is queued: the hub's tag is left out of this comment
        spec = job_spec(profile, backend, self.user.name, home, self.name, "", self.deployment.walltime.save_before or 0)
        try:
            self.expected_start = await SlurmClient.for_backend(backend).expected_start(self.user.name, spec.script(["true"]))
        except SlurmError as error:
            if "allocation failure:" not in error.message:  # SLURM unreachable, or another refusal: sbatch's own message decides
                return ""
            return (f"SLURM would never start this job: {error.message}. The partition's nodes, less what reservations "
                    "hold, cannot fit it; ask for fewer cores, less memory or fewer GPUs, or another partition.")
        return ""

    def report_port(self, port: int) -> None:
        """Called by the port-report API handler: the job's server will listen on ``port``."""
        if self.port_reported is not None and not self.port_reported.done():
            self.port_reported.set_result(port)

    async def slurm_start(self):
        """Submit the job, follow it in the shared queue, and return (node, port) once its server reports."""
        self.end_reason = ""
        self.job_end_epoch = 0.0
        self._ready = False
        profile, backend = self.profile, self.backend
        home = self.home()
        command = list(backend.job_command or [str(Path(sys.executable).with_name("hpclab-singleuser"))])
        command += list(self.cmd) + self.get_args()
        script = build_batch_script(
            profile, backend, self.user.name, home, command, self.name, await self.hub_id(),
            self.deployment.walltime.save_before or 0
        )
        self.port_reported = asyncio.get_running_loop().create_future()
        self.progress_line, self.progress_percent = "Submitting the job to SLURM…", 5
        try:
            self.job_id = await self.client.submit(self.user.name, script, self.get_env())
        except SlurmError as error:
            self.port_reported = None
            self.record_failure("slurm_refused")
            raise web.HTTPError(400, f"SLURM refused the job: {error.message}") from None
        _LIVE_JOBS.add(self.job_id)
        self.start_metrics()
        self.log.info("Submitted SLURM job %s for %s (profile %s)", self.job_id, self._log_name, profile.slug)
        try:
            port, node = await self._wait_for_server()
            await self._wait_answering(node, port)
        except BaseException as error:
            self.record_failure("job_failed" if isinstance(error, web.HTTPError) else "timeout")
            await self._cancel_job()
            raise
        finally:
            self.port_reported = None
        self._ready = True
        self.progress_line = f"Job {self.job_id} running on {node}; JupyterLab is starting…"
        return (node, port)

    async def _wait_for_server(self) -> tuple[int, str]:
        """Follow the job until its server reports a port; fail with SLURM's words if the job ends first."""
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

    async def _wait_answering(self, node: str, port: int) -> None:
        """Return once the job's server accepts connections (polled every 0.1 s), so that JupyterHub's own check
        succeeds at once instead of after its random backoff; fail with SLURM's words if the job ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        self.progress_line = f"Job {self.job_id} running on {node}; JupyterLab is starting on port {port}…"
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(node, port), timeout=2)
            except (OSError, TimeoutError):
                status = await self.queue.status(self.job_id)
                if status.info is not None and not status.info.active:
                    raise web.HTTPError(500, f"{describe_end(status.info)} The server never started. {self._output_tail()}") from None
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    def _mark_running(self, submitted: float) -> None:
        """The job started: its wall clock runs from now, and its queue wait is recorded."""
        self.start_wall_clock()  # SLURM's limit counts from when the job runs
        metrics.QUEUE_WAIT.labels(self.profile_slug, self.profile.backend).observe(time.monotonic() - submitted)

    def _output_path(self) -> str:
        return self.backend.output.format(home=self.home(), username=self.user.name).replace("%j", self.job_id)

    def _output_tail(self, lines: int = 5) -> str:
        """The last lines of the job's output file, to show why it failed (where the hub can read it)."""
        path = self._output_path()
        try:
            with open(path, errors="replace") as handle:
                tail = handle.read()[-4000:].strip().splitlines()[-lines:]
        except OSError:
            return f"See {path}."
        return f"Last lines of {path}: " + " | ".join(tail) if tail else f"{path} is empty."

    async def slurm_progress(self):
        last = None
        while not self._ready:
            if self.progress_line != last:
                last = self.progress_line
                yield {"progress": self.progress_percent, "message": last}
            await asyncio.sleep(0.5)

    # --- poll / stop --------------------------------------------------------------------------

    async def slurm_poll(self):
        if not self.job_id:
            return 0
        await self._check_orphans_once()
        status = await self.queue.status(self.job_id)
        if not status.known:
            self.log.warning("SLURM not answering for %s (%s): assuming still running", self._log_name, self.queue.last_error)
            return None
        if status.info is None:
            self.end_reason = f"SLURM job {self.job_id} is no longer in the queue."
            return 0
        if status.info.active:
            return None
        self.end_reason = describe_end(status.info)
        self.log.info("%s: %s", self._log_name, self.end_reason)
        return 0 if status.info.state == "COMPLETED" else 1

    async def slurm_extend(self, seconds: int) -> None:
        """Raise the job's time limit to ``seconds`` (scontrol update as the hub: SLURM operator rights)."""
        from hpclab_hub.backends.slurm.client import extend_job

        try:
            await extend_job(SlurmClient.for_backend(self.backend), self.job_id, seconds)
        except SlurmError as error:
            raise web.HTTPError(500, f"SLURM did not extend job {self.job_id}: {error.message}") from None

    async def _cancel_job(self) -> None:
        if not self.job_id:
            return
        try:
            await self.client.run(self.client.as_user(self.user.name, ["scancel", self.job_id]))
        except SlurmError as error:
            self.log.warning("scancel %s failed: %s", self.job_id, error.message)

    async def slurm_stop(self, now: bool = False) -> None:
        if not self.job_id:
            return
        await self._cancel_job()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = await self.queue.status(self.job_id, max_age=0.5)
            if status.known and (status.info is None or not status.info.active):
                return
            await asyncio.sleep(0.5)
        self.log.warning("SLURM job %s still listed 30 s after scancel", self.job_id)

    async def _check_orphans_once(self) -> None:
        """After a hub start: jobs carrying this hub's tag that no server owns are reported or cancelled."""
        hub_id = await self.hub_id()
        if hub_id in _ORPHAN_CHECK_DONE:
            return
        _ORPHAN_CHECK_DONE.add(hub_id)
        await self.queue.refresh(max_age=0)
        owned = set(_LIVE_JOBS)
        for row in self.db.query(orm.Spawner).all():
            if row.state and row.state.get("job_id"):
                owned.add(str(row.state["job_id"]))
        tag = f"hpclab:{hub_id}:"
        for job in self.queue.snapshot().values():
            if job.active and job.comment.startswith(tag) and job.job_id not in owned:
                if self._any_backend().orphan_jobs == "cancel":
                    self.log.warning("Cancelling orphan SLURM job %s (%s) that no server owns", job.job_id, job.name)
                    await self.client.run(["scancel", job.job_id])
                else:
                    self.log.warning("Orphan SLURM job %s (%s, user %s) is not owned by any server", job.job_id, job.name, job.user)
