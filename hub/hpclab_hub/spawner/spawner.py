"""The one spawner of an HPCLab hub: the form, the profile and its wall time; a backend object runs the server.

A plain JupyterHub Spawner (no mixins). The profile chosen on the form decides, per server, which ``ServerBackend``
does the work (``BACKENDS``: a ``LocalServer`` process or a ``SlurmServer`` job); the profile is kept in the server's
state, so a restarted hub hands each re-adopted server to the same kind of backend, with its job id or allocation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from jupyterhub.spawner import Spawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Dict, Float, Integer, Unicode, default

from hpclab_hub.backends import Launch, Refusals, ServerBackend
from hpclab_hub.backends.local.backend import LocalServer
from hpclab_hub.backends.local.zygote import SERVER_COMMAND
from hpclab_hub.backends.slurm.availability import ClusterState, cluster_state
from hpclab_hub.backends.slurm.backend import SlurmServer
from hpclab_hub.config import cached_deployment
from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.config.user_choices import stored_form, with_choices
from hpclab_hub.ops import metrics
from hpclab_hub.ops.events import log_event
from hpclab_hub.ops.spawn_queue import LINE, queued_message
from hpclab_hub.spawner import home, walltime
from hpclab_hub.spawner.access import groups_of
from hpclab_hub.spawner.authorise import Requester, active_servers, authorise
from hpclab_hub.spawner.availability import form_availability
from hpclab_hub.spawner.environment import profile_env, server_args
from hpclab_hub.spawner.form import profile_from_form
from hpclab_hub.spawner.history_record import record_start
from hpclab_hub.spawner.internal_certs import move_certs
from hpclab_hub.spawner.spawn_form import cluster_options_for, render_form

#: the backend class for each ``backends.<name>.type`` (a third backend: docs/design.md, "A third backend")
BACKENDS: dict[str, type[ServerBackend]] = {"local": LocalServer, "slurm": SlurmServer}


class HPCLabSpawner(Spawner):
    """Starts, follows and stops a server on the backend of its profile; one class for every site shape."""

    deployment_file = Unicode(help="Path of the deploy YAML this hub was started from.").tag(config=True)
    profile_slug = Unicode("", help="Slug of the profile the running server was started with (kept in state).")
    job_end_epoch = Float(0, help="When the server's wall time runs out (epoch seconds; 0 = no limit; kept in state).")
    end_reason = Unicode("", help="Why the last server ended on its own, shown on the home page (kept in state).")
    chosen_at = Float(0, help="When the user last chose this profile (epoch seconds; kept in state): the form remembers it.")
    user_choices = Dict(help="The user's validated choices (cores, memory, time, partition, ...) for this server (in state).")
    extended_seconds = Integer(0, help="Wall time added to this server since it started (kept in state).")
    cluster_cap_seconds = Integer(0, help="The cluster's cap on the job's wall time (partition MaxTime, QoS MaxWall; 0 = none).")
    cluster_cap_source = Unicode("", help='What sets cluster_cap_seconds, e.g. "QoS debug\'s MaxWall" (kept in state).')

    #: what the progress page shows while this start waits in the hub's line ("" when it does not wait)
    queue_message = ""
    _backend: ServerBackend | None = None
    _effective: tuple[tuple[Any, ...], Profile] | None = None
    _extend_lock: asyncio.Lock | None = None
    port: int  # JupyterHub's traits, typed here: a backend that picks_port gets one from the hub
    ssl_alt_names: list[str]

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        return list(SERVER_COMMAND)  # the hub's own jupyterhub-singleuser, without import-time work it never uses

    @default("default_url")
    def _default_url_default(self) -> str:
        return "/lab"

    @default("env_keep")
    def _env_keep_default(self) -> list[str]:
        return ["LANG", "LC_ALL", "JUPYTERHUB_SINGLEUSER_APP"]  # nothing else of the hub's environment

    @default("options_form")
    def _options_form_default(self) -> Any:
        return lambda spawner: spawner.render_form()

    @default("options_from_form")
    def _options_from_form_default(self) -> Any:
        return lambda formdata, spawner=None: profile_from_form(formdata)

    @default("apply_user_options")
    def _apply_user_options_default(self) -> Any:
        return HPCLabSpawner._apply_and_log

    # --- what a backend may ask (backends.ServerContext) ------------------------------------

    @property
    def deployment(self) -> Deployment:
        """The validated deploy YAML (read once per hub process)."""
        return cached_deployment(self.deployment_file)

    user_name = property(lambda self: str(self.user.name))
    log_name = property(lambda self: str(self._log_name))
    database = property(lambda self: self.db)

    @property
    def profile(self) -> Profile:
        """The profile of the current or last start, as the user's choices shaped it."""
        return self.effective_profile()

    def user_groups(self) -> frozenset[str]:
        """Groups used for profile access: the YAML's groups plus the hub's (from LDAP, OIDC or the admin page)."""
        return groups_of(self.user.name, self.deployment, (g.name for g in self.user.groups))

    def effective_profile(self) -> Profile:
        """The YAML profile with this server's choices applied, built once per (YAML profile, choices)."""
        profile = self.deployment.profile(self.profile_slug)
        if profile is None:
            raise web.HTTPError(400, f"Profile {self.profile_slug!r} is not in the deploy YAML any more.")
        key = (id(profile), tuple(sorted(self.user_choices.items())))
        if self._effective is None or self._effective[0] != key:
            self._effective = (key, with_choices(profile, dict(self.user_choices)))
        return self._effective[1]

    def start_wall_clock(self) -> None:
        """The server runs from now: its wall time ends after the profile's time limit."""
        limit = self.profile.time_limit
        self.job_end_epoch = time.time() + limit if limit else 0.0

    def record_failure(self, reason: str) -> None:
        """Count a spawn that failed after it was accepted (no free GPU, SLURM refused, job failed, ...)."""
        metrics.SPAWN_FAILURES.labels(self.profile_slug or "(default)", reason).inc()

    def start_metrics(self) -> None:
        """Begin timing this spawn; a background task records it once the server answers."""
        metrics.set_active_lister(lambda: ((s.user, s.groups, s.profile, s.gpus) for s in self._active(include_self=True)))
        metrics.observe_spawn(self, self.profile_slug, self.profile.backend)

    def walltime_limits(self) -> tuple[int | None, int | None]:
        """(current wall time with extensions, the most it may become) in seconds; None without a limit."""
        current, longest, _ = self._walltime_bounds()
        return current, longest

    # --- which backend ------------------------------------------------------------------------

    def _kind(self, state: dict[str, Any] | None = None) -> str:
        """The backend kind of the current (or last) server's profile; for a profile that left the YAML, what its state holds."""
        profile = self.deployment.profile(self.profile_slug) if self.profile_slug else None
        if profile is None:  # the backend object held, else the backend whose id (ServerBackend.id_key) the state holds
            kinds = [kind for kind, cls in BACKENDS.items() if (state or {}).get(cls.id_key)]
            return self._backend.kind if self._backend is not None else (kinds or list(BACKENDS))[0]
        return self.deployment.backends[profile.backend].type

    def _backend_of(self, kind: str) -> ServerBackend:
        if self._backend is None or self._backend.kind != kind:
            self._backend = BACKENDS[kind](self)
        return self._backend

    @property
    def server_backend(self) -> ServerBackend:
        """The backend object of the current (or last) server."""
        return self._backend_of(self._kind())

    async def cluster_state(self, backend_name: str) -> ClusterState | str:
        """A SLURM backend's partitions now (sinfo and scontrol), or SLURM's message: for the form and for starts."""
        return await cluster_state(self.deployment.backends[backend_name])

    async def create_certs(self) -> dict[str, str]:
        """internal_ssl: a certificate that names every host the backend may run the server on (internal_certs.py)."""
        self.ssl_alt_names = await self.server_backend.cert_alt_names() or self.ssl_alt_names
        return await super().create_certs()

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        return move_certs(paths, self.user.name, self.server_backend.home())

    # --- the form and the checks before a start ------------------------------------------------

    async def render_form(self) -> str:
        """The spawn form for this user: allowed profiles, live availability (each backend's), the preselected one checked."""
        available = await form_availability(self.deployment, lambda name: BACKENDS[self.deployment.backends[name].type](self))
        return await render_form(self.deployment, self.user, self.user_groups(), getattr(self, "handler", None), available)

    @staticmethod
    async def _apply_and_log(spawner: HPCLabSpawner, user_options: dict[str, Any]) -> None:
        try:
            await spawner.apply_profile(user_options)
        except web.HTTPError as refused:  # the profile, a choice, a quota, availability: before anything starts
            reason = getattr(refused, "jupyterhub_message", None) or refused.log_message
            spawner.server_event(
                "refused", (user_options or {}).get("profile") or None, status=refused.status_code, reason=reason
            )
            raise

    async def apply_profile(self, user_options: dict[str, Any]) -> None:
        """Resolve and authorise the requested profile and the user's choices (form and REST API alike) before anything starts."""
        deployment = self.deployment
        who = Requester(self.user.name, self._log_name, self.user_groups(), bool(self.user.admin))

        async def refusals(profile: Profile) -> Refusals:
            return await self._backend_of(deployment.backends[profile.backend].type).refusals(profile)

        allowed = await authorise(
            deployment,
            who,
            user_options,
            lambda p: cluster_options_for(deployment, p, who.name),
            refusals,
            self._active,
            self.log,
        )
        profile = allowed.profile
        self.cluster_cap_seconds, self.cluster_cap_source = allowed.refusals.cap_seconds, allowed.refusals.cap_source
        self.profile_slug = profile.slug  # from here on this spawn counts against quotas (no await in between)
        self.user_choices = allowed.chosen
        self.extended_seconds = 0
        self.chosen_at = time.time()
        # the profile and choices actually applied (defaults filled in), for the REST API, relaunch and the culler
        self.user_options = {"profile": allowed.base.slug, **stored_form(allowed.chosen)}  # (any other key was refused)
        if getattr(self, "orm_spawner", None) is not None:
            self.orm_spawner.user_options = self.user_options
        self.start_timeout = profile.spawn_timeout
        self.http_timeout = profile.spawn_timeout
        self.cpu_limit = float(profile.cpus)
        self.mem_limit = profile.memory

    def _active(self, include_self: bool = False) -> list[Any]:
        return active_servers(self.deployment, self.user.settings.get("users", {}).values(), skip=None if include_self else self)

    # --- JupyterHub's spawner interface ---------------------------------------------------------

    def get_args(self) -> list[str]:
        return [*super().get_args(), *server_args(self.deployment, self.profile, self.log)]

    def profile_env(self) -> dict[str, str]:
        return profile_env(self.deployment, self.profile, self.name)

    def get_env(self) -> dict[str, str]:
        return self.server_backend.environment(super().get_env(), self.profile_env())

    def server_event(self, kind: str, profile: str | None = None, **fields: object) -> None:
        """One ``hpclab-event`` line in the hub's log (events.py) for this server."""
        backend = self.profile.backend if self.profile_slug else None
        log_event(self.log, kind, self.user.name, profile or self.profile_slug, self.name, backend=backend, **fields)

    async def start(self) -> tuple[str, int]:
        try:
            started = await self._start()
        except Exception as error:
            refused = isinstance(error, web.HTTPError) and error.status_code < 500
            reason = getattr(error, "jupyterhub_message", None) or getattr(error, "log_message", None) or str(error)
            self.server_event("refused" if refused else "failed", reason=reason)
            raise
        backend = self.server_backend
        ids = {backend.id_key: value} if (value := backend.get_state().get(backend.id_key)) else {}
        self.server_event("start", **ids)
        record_start(self, ids)  # its row in the hub's history (spawner/history_record.py), closed by the post-stop hook
        return started

    async def _start(self) -> tuple[str, int]:
        limit = self.deployment.hub.concurrent_spawn_limit

        def waiting(starting: int, place: int) -> None:
            self.queue_message = queued_message(starting, limit, place)

        try:
            await LINE.wait_turn(self, limit, waiting)
        finally:
            self.queue_message = ""
        backend = self.server_backend
        if backend.picks_port and not self.port:
            self.port = random_port()
        # the YAML's singleuser_cmd, if set
        command = getattr(self.deployment.backends[self.profile.backend], "singleuser_cmd", None) or self.cmd
        launch = Launch([*command, *self.get_args()], super().get_env(), self.profile_env(), self.ip or "127.0.0.1", self.port)
        return await backend.start(launch)

    async def stop(self, now: bool = False) -> None:
        await self.server_backend.stop(now=now)
        if self.profile_slug:
            self.server_event("stop")

    async def poll(self) -> int | None:
        backend = self.server_backend
        if not self.profile_slug and not backend.holds_server():
            return 0  # never started (or state cleared): nothing runs
        return await backend.poll()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        shown = ""
        while self.queue_message:  # waiting in line: say where, each time that changes
            if self.queue_message != shown:
                shown = self.queue_message
                yield {"progress": 2, "message": shown}
            await asyncio.sleep(0.5)
        async for event in self.server_backend.progress():
            yield event

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        own = {
            "profile": self.profile_slug,
            "job_end": self.job_end_epoch,
            "end_reason": self.end_reason,
            "chosen_at": self.chosen_at,
            "choices": dict(self.user_choices),
            "extended": self.extended_seconds,
            "cluster_cap": [self.cluster_cap_seconds, self.cluster_cap_source] if self.cluster_cap_seconds else None,
        }
        state.update({key: value for key, value in own.items() if value})
        if self._backend is not None:
            state.update(self._backend.get_state())
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.profile_slug = state.get("profile", "")
        self.job_end_epoch = float(state.get("job_end", 0))
        self.end_reason = state.get("end_reason", "")
        self.chosen_at = float(state.get("chosen_at", 0))
        self.user_choices = dict(state.get("choices", {}))
        self.extended_seconds = int(state.get("extended", 0))
        cap_seconds, cap_source = state.get("cluster_cap") or (0, "")
        self.cluster_cap_seconds, self.cluster_cap_source = int(cap_seconds), str(cap_source)
        self._backend_of(self._kind(state)).load_state(state)

    def clear_state(self) -> None:
        super().clear_state()
        if self._backend is not None:
            self._backend.clear_state()

    # --- wall time and the home page ------------------------------------------------------------

    def _walltime_bounds(self) -> tuple[int | None, int | None, str]:
        return walltime.walltime_bounds(self.profile, self.extended_seconds, self.cluster_cap_seconds, self.cluster_cap_source)

    async def extend_walltime(self, minutes: int) -> float:
        """Add ``minutes`` to the running server's wall time, within its limits; the new end (walltime.extend)."""
        if self._extend_lock is None:
            self._extend_lock = asyncio.Lock()
        async with self._extend_lock:  # one at a time: a second waits for the first and is checked against its new end
            return await walltime.extend(self, minutes)

    def save_state(self) -> None:
        """The server's state written to the database now (not only when JupyterHub next saves it)."""
        if getattr(self, "orm_spawner", None) is not None:
            self.orm_spawner.state = self.get_state()
            self.db.commit()

    @property
    def time_left_text(self) -> str:
        """'1 h 05 min left (ends 14:05 UTC)' for the home page, '' without a limit or a server."""
        return walltime.time_left_text(self.job_end_epoch) if self.active else ""

    def server_summary(self) -> dict[str, str]:
        """What the home page lists for this server: profile, backend, state, choices and time left (home.py)."""
        return home.server_summary(self)
