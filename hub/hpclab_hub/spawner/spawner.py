"""The one spawner of an HPCLab hub: each server goes to the backend its profile names (local or SLURM).

A site is one hub in front of any mix of backends (a SLURM cluster, a teaching server, a GPU
server). The profile chosen on the form decides, per server, which half does the work:
``LocalServerMixin`` (a process under the user's account on this machine) or ``SlurmServerMixin``
(a job on the cluster). The chosen profile is kept in the server's state, so a restarted hub
dispatches each re-adopted server to the same half, with its job id or allocation.
"""

from __future__ import annotations

import asyncio
import subprocess

from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import default

from hpclab_hub.spawner.availability import form_availability
from hpclab_hub.ops.events import log_event
from hpclab_hub.backends.local.server import LocalServerMixin
from hpclab_hub.spawner.profile import ProfileSpawnerMixin
from hpclab_hub.backends.slurm.spawner import SlurmServerMixin
from hpclab_hub.ops.spawn_queue import LINE, queued_message


class HPCLabSpawner(LocalServerMixin, SlurmServerMixin, ProfileSpawnerMixin, LocalProcessSpawner):
    """Starts, follows and stops a server on the backend of its profile; one class for every site shape."""

    @default("popen_kwargs")
    def _popen_kwargs_default(self) -> dict:
        return {"stdin": subprocess.DEVNULL}  # a local server never reads the hub's terminal

    @default("env_keep")
    def _env_keep_default(self) -> list[str]:
        return ["LANG", "LC_ALL", "JUPYTERHUB_SINGLEUSER_APP"]  # nothing else of the hub's environment

    @property
    def on_slurm(self) -> bool:
        """Whether the current (or last) server is a SLURM job."""
        return self.backend_kind == "slurm"

    def get_args(self) -> list[str]:
        return super().get_args() + self.server_args()

    def get_env(self) -> dict:
        return self.slurm_env() if self.on_slurm else self.local_env()

    #: what the progress page shows while this start waits in the hub's line ("" when it does not wait)
    queue_message = ""

    def server_event(self, kind: str, profile: str | None = None, **fields: object) -> None:
        """One ``hpclab-event`` line in the hub's log (events.py) for this server."""
        log_event(self.log, kind, self.user.name, profile or self.profile_slug, self.name,
                  backend=self.profile.backend if self.profile_slug else None, **fields)

    @default("apply_user_options")
    def _apply_user_options_logged(self):
        async def apply(spawner: HPCLabSpawner, user_options: dict) -> None:
            try:
                await ProfileSpawnerMixin._apply_profile(spawner, user_options)
            except web.HTTPError as refused:  # the profile, a choice, a quota, availability: before anything starts
                spawner.server_event("refused", (user_options or {}).get("profile") or None, status=refused.status_code,
                                     reason=getattr(refused, "jupyterhub_message", None) or refused.log_message)
                raise
        return apply

    async def start(self):
        try:
            started = await self._start()
        except Exception as error:
            refused = isinstance(error, web.HTTPError) and error.status_code < 500
            reason = getattr(error, "jupyterhub_message", None) or getattr(error, "log_message", None) or str(error)
            self.server_event("refused" if refused else "failed", reason=reason)
            raise
        self.server_event("start", **({"job": self.job_id} if self.on_slurm and getattr(self, "job_id", None) else {"pid": self.pid}))
        return started

    async def _start(self):
        limit = self.deployment.hub.concurrent_spawn_limit

        def waiting(starting: int, place: int) -> None:
            self.queue_message = queued_message(starting, limit, place)

        try:
            await LINE.wait_turn(self, limit, waiting)
        finally:
            self.queue_message = ""
        if self.on_slurm:
            return await self.slurm_start()
        ip, port = await self.local_start()
        await self._door_changed(port, add=True)
        return ip, port

    async def stop(self, now: bool = False) -> None:
        port = self.server.port if self.server is not None and not self.on_slurm else 0
        uid = (self.account_state or {}).get("uid")
        await (self.slurm_stop(now=now) if self.on_slurm else self.local_stop(now=now))
        if port:
            await self._door_changed(port, add=False, uid=uid)
        if self.profile_slug:
            self.server_event("stop")

    async def _door_changed(self, port: int, add: bool, uid: int | None = None) -> None:
        """A local server's port: only its own account and the hub's may connect to it (one_door.py)."""
        from hpclab_hub.backends.local.one_door import DoorError, current_door

        door = current_door()
        uid = (self.account_state or {}).get("uid") if uid is None else uid
        if door is None or uid is None:
            return
        try:
            await asyncio.to_thread(door.add_server if add else door.remove_server, port, int(uid))
        except (DoorError, OSError, subprocess.TimeoutExpired) as failed:
            if add:  # a server any account could reach directly must not run
                await self.local_stop(now=True)
                raise RuntimeError(f"could not close {self._log_name}'s port {port} to other accounts: {failed}") from None
            self.log.warning("One door: could not forget port %s: %s", port, failed)

    async def poll(self):
        if not self.profile_slug and not self.pid:
            return 0  # never started (or state cleared): nothing runs
        return await (self.slurm_poll() if self.on_slurm else self.local_poll())

    async def apply_extension(self, seconds: int) -> None:
        """A new wall time of ``seconds``: SLURM raises the job's limit; locally the hub's own deadline is all there is."""
        if self.on_slurm:
            await self.slurm_extend(seconds)

    async def progress(self):
        shown = ""
        while self.queue_message:  # waiting in line: say where, each time that changes
            if self.queue_message != shown:
                shown = self.queue_message
                yield {"progress": 2, "message": shown}
            await asyncio.sleep(0.5)
        events = self.slurm_progress() if self.on_slurm else self.local_progress()
        async for event in events:
            yield event

    async def render_form(self) -> str:
        self._availability = await form_availability(self)
        return await super().render_form()
