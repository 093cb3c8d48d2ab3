"""What every HPCLab spawner shares: the profile form, authorisation, and the chosen profile in state."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tornado import web
from traitlets import Dict, Float, HasTraits, Integer, Unicode, default

from hpclab_hub.spawner.access import ProfileRefused, choose_profile, groups_of, last_profile, visible_profiles
from hpclab_hub.config import cached_deployment
from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.config.units import format_duration
from hpclab_hub.ops.culling import activity_interval
from hpclab_hub.spawner.form import profile_from_form, render_profile_form
from hpclab_hub.ops import metrics
from hpclab_hub.spawner.quotas import ActiveServer, QuotaExceeded, check_quotas
from hpclab_hub.spawner.refusal import refusal

if TYPE_CHECKING:  # pragma: no cover
    from hpclab_hub.spawner.availability import ClusterState


class ProfileSpawnerMixin(HasTraits):
    """Mixed into a concrete spawner: renders the form, resolves and authorises the profile, keeps its slug."""

    deployment_file = Unicode(help="Path of the deploy YAML this hub was started from.").tag(config=True)
    profile_slug = Unicode("", help="Slug of the profile the running server was started with (kept in state).")
    job_end_epoch = Float(0, help="When the server's wall time runs out (epoch seconds; 0 = no limit; kept in state).")
    end_reason = Unicode("", help="Why the last server ended on its own, shown on the home page (kept in state).")
    chosen_at = Float(0, help="When the user last chose this server's profile (epoch seconds; kept in state): the form remembers it.")
    user_choices = Dict(help="The user's validated choices (cores, memory, time, partition, ...) for this server (kept in state).")
    extended_seconds = Integer(0, help="Wall time added to this server since it started (kept in state).")
    cluster_cap_seconds = Integer(0, help="The cluster's cap on this job's wall time (partition MaxTime, QoS MaxWall; 0 = none; kept in state).")
    cluster_cap_source = Unicode("", help="What sets cluster_cap_seconds, e.g. \"QoS debug's MaxWall\" (kept in state).")

    @property
    def deployment(self) -> Deployment:
        """The validated deploy YAML (read once per hub process)."""
        return cached_deployment(self.deployment_file)

    def user_groups(self) -> frozenset[str]:
        """Groups used for profile access: YAML groups plus the hub's (fed by OIDC/LDAP later)."""
        return groups_of(self.user.name, self.deployment, (g.name for g in self.user.groups))

    @property
    def backend_kind(self) -> str:
        """'local' or 'slurm': the kind of backend of the current (or last) server's profile.

        A server whose profile left the YAML is recognised by what its state holds (a job id or a pid).
        """
        profile = self.deployment.profile(self.profile_slug) if self.profile_slug else None
        if profile is not None:
            return self.deployment.backends[profile.backend].type
        return "slurm" if getattr(self, "job_id", "") else "local"

    @property
    def backend(self):
        """The backend entry of the current (or last) server's profile (a LocalBackend or a SlurmBackend)."""
        return self.deployment.backends[self.profile.backend]

    def requested_profile(self) -> str:
        """The profile a link asked to preselect (``?profile=SLUG``, or ``?opt-profile=SLUG`` of a refused start), else the last choice."""
        handler = getattr(self, "handler", None)
        if handler is not None:
            asked = (handler.get_argument("profile", "") or handler.get_argument("hpclab-profile", "")
                     or handler.get_argument("opt-profile", ""))  # a start link whose start was refused
            if asked:
                return asked
        return last_profile(self.user)

    async def render_form(self) -> str:
        """The spawn form for this user: allowed profiles, live availability, the preselected one checked."""
        from hpclab_hub.spawner.form import site_branding

        profiles = visible_profiles(self.deployment, self.user_groups())
        availability = getattr(self, "_availability", {})
        cluster = await self._cluster_options_by_profile(profiles)
        return render_profile_form(
            profiles, selected=self.requested_profile(), availability=availability, branding=site_branding(self.deployment),
            cluster_options=cluster, link_choices=self.link_choices(),
        )

    def link_choices(self) -> dict[str, str] | None:
        """The choices a spawn link carried (``?opt-cpus=4`` or ``?cpus=4``, with or without a profile); None for no link.

        They only fill in the form: the user presses Start, and the POST is checked like any other.
        """
        from hpclab_hub.config.user_choices import CHOICE_KEYS

        handler = getattr(self, "handler", None)
        if handler is None or handler.request.method != "GET":
            return None
        arguments = handler.request.query_arguments
        if not any(name == "profile" or name.startswith("opt-") for name in arguments):
            return None
        return {key: value for key in CHOICE_KEYS if (value := handler.get_argument(f"opt-{key}", "") or handler.get_argument(key, ""))}

    def _deferred_choices(self, profile: Profile) -> set[str]:
        """The choices of ``profile`` whose allowed values the cluster gives (SLURM profiles only)."""
        choices = profile.choices
        if choices is None or self.deployment.backends[profile.backend].type != "slurm":
            return set()
        return {key for key, word in (("account", "associations"), ("reservation", "active"), ("gpu_type", "partition"))
                if getattr(choices, key) == word}

    async def _ask_cluster(self, backend_name: str, wanted: set[str]):
        from hpclab_hub.backends.slurm.client import SlurmClient, cluster_options

        backend = self.deployment.backends[backend_name]
        client = SlurmClient.for_backend(backend)
        return await cluster_options(client, self.user.name, wanted)

    async def cluster_options_for(self, profile: Profile):
        """What the cluster lets this user pick where the profile's choices defer to it; None when none do."""
        wanted = self._deferred_choices(profile)
        return await self._ask_cluster(profile.backend, wanted) if wanted else None

    async def _cluster_options_by_profile(self, profiles: list[Profile]) -> dict:
        """The form's cluster answers: one set of SLURM calls per backend, shared by its profiles."""
        wanted: dict[str, set[str]] = {}
        for profile in profiles:
            wanted.setdefault(profile.backend, set()).update(self._deferred_choices(profile))
        answers = {name: await self._ask_cluster(name, keys) for name, keys in wanted.items() if keys}
        return {p.slug: answers.get(p.backend) if self._deferred_choices(p) else None for p in profiles}

    @default("cmd")
    def _cmd_default(self):
        # the hub's own environment's jupyterhub-singleuser, started without import-time work it never uses
        return [sys.executable, "-m", "hpclab_hub.deferred_imports", "jupyterhub-singleuser"]

    @default("default_url")
    def _default_url_default(self):
        return "/lab"

    @default("options_form")
    def _options_form_default(self):
        return lambda spawner: spawner.render_form()

    @default("options_from_form")
    def _options_from_form_default(self):
        return lambda formdata, spawner=None: profile_from_form(formdata)

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return ProfileSpawnerMixin._apply_profile

    @staticmethod
    async def _apply_profile(spawner: "ProfileSpawnerMixin", user_options: dict) -> None:
        """Resolve and authorise the requested profile and the user's choices (form and REST API alike) before anything starts."""
        from hpclab_hub.config.user_choices import ChoiceRefused, stored_form, validate_choices, with_choices

        requested = (user_options or {}).get("profile") or ""
        try:
            profile = choose_profile(spawner.deployment, requested, spawner.user_groups())
        except ProfileRefused as refused:
            spawner.log.warning("Refused profile for %s: %s", spawner._log_name, refused)
            reason = "forbidden" if refused.status == 403 else "unknown_profile"
            metrics.SPAWN_FAILURES.labels(requested or "(default)", reason).inc()
            raise refusal(refused.status, str(refused)) from None
        try:
            chosen = validate_choices(profile, user_options or {}, await spawner.cluster_options_for(profile))
        except ChoiceRefused as refused:
            spawner.log.warning("Refused choice for %s: %s", spawner._log_name, refused)
            metrics.SPAWN_FAILURES.labels(profile.slug, "choice").inc()
            raise refusal(400, f"Profile {profile.slug!r}: {refused}") from None
        base, profile = profile, with_choices(profile, chosen)
        blocked, too_long = await spawner.start_refusals(profile)
        if blocked:
            metrics.SPAWN_FAILURES.labels(profile.slug, "unavailable").inc()
            raise refusal(400, f"Profile {profile.slug!r} cannot start here: {blocked}")
        if too_long:
            spawner.log.warning("Refused choice for %s: %s", spawner._log_name, too_long)
            metrics.SPAWN_FAILURES.labels(profile.slug, "choice").inc()
            raise refusal(400, f"Profile {profile.slug!r}: {too_long}")
        spawner.enforce_quotas(profile)
        spawner.profile_slug = profile.slug  # from here on this spawn counts against quotas (no await in between)
        spawner.user_choices = chosen
        spawner.extended_seconds = 0
        spawner.chosen_at = time.time()
        # the profile and choices actually applied (defaults filled in), for the REST API, relaunch and the culler
        spawner.user_options = {"profile": base.slug, **stored_form(chosen)}  # (any other key was refused above)
        if getattr(spawner, "orm_spawner", None) is not None:
            spawner.orm_spawner.user_options = spawner.user_options
        spawner.start_timeout = profile.spawn_timeout
        spawner.http_timeout = profile.spawn_timeout
        spawner.cpu_limit = float(profile.cpus)
        spawner.mem_limit = profile.memory

    async def start_refusals(self, profile: Profile) -> tuple[str, str]:
        """(why ``profile`` cannot start on its backend, why its wall time is too long there); '' where it is fine.

        Checked before anything is held or submitted. The first is the form's rule for disabled profiles
        (availability.py): locally, more GPUs than the server has; on SLURM, a partition that is missing,
        down, without nodes, or without GPUs for a GPU profile (a busy partition blocks nothing: the job
        waits with SLURM's reason). The second, on SLURM, is a (chosen) time_limit above the cluster's cap:
        the partition's MaxTime or its QoS's MaxWall (asked of sacctmgr only when the job has a QoS), kept
        for the server's extensions. Last, SLURM itself is asked whether it would ever start the job
        (``sbatch --test-only``: reservations, node sizes). A cluster that cannot answer refuses nothing:
        sbatch's own message decides.
        """
        from hpclab_hub.spawner.availability import cluster_time_cap, local_blocked, slurm_profile_availability, too_long_refusal

        backend = self.deployment.backends[profile.backend]
        self.cluster_cap_seconds, self.cluster_cap_source = 0, ""
        if backend.type == "local":
            return local_blocked(profile, self.pool(profile)), ""
        answer = await self.cluster_state(profile.backend)
        cap = await cluster_time_cap(profile, backend, answer)
        if cap is not None:
            self.cluster_cap_seconds, self.cluster_cap_source = cap.seconds, cap.source
        blocked, too_long = slurm_profile_availability(profile, backend, answer).blocked, too_long_refusal(profile, cap)
        if not (blocked or too_long or isinstance(answer, str)):
            blocked = await self.slurm_never_starts(profile)  # type: ignore[attr-defined]  # SlurmServerMixin
        return blocked, too_long

    async def cluster_state(self, backend_name: str) -> "ClusterState | str":
        """A SLURM backend's partitions now (sinfo and scontrol), or SLURM's message: for the form and for starts."""
        from hpclab_hub.spawner.availability import cluster_state

        return await cluster_state(self.deployment.backends[backend_name])

    def active_servers(self, include_self: bool = False) -> list[ActiveServer]:
        """Every other server of this hub (or every one) that is running or starting, with its profile's resources."""
        active = []
        for user in self.user.settings.get("users", {}).values():
            for spawner in user.spawners.values():
                if (spawner is self and not include_self) or not getattr(spawner, "profile_slug", ""):
                    continue
                if not (spawner.active or getattr(spawner, "_start_pending", False)):
                    continue
                profile = spawner.effective_profile() if self.deployment.profile(spawner.profile_slug) else None
                if profile is not None:
                    groups = groups_of(user.name, self.deployment, (g.name for g in user.groups))
                    active.append(ActiveServer(user.name, groups, profile.slug, profile.cpus, profile.gpus, profile.memory or 0))
        return active

    def start_metrics(self) -> None:
        """Begin timing this spawn; a background task records it once the server answers."""
        import asyncio
        import time

        metrics.set_active_lister(lambda: ((s.user, s.groups, s.profile, s.gpus) for s in self.active_servers(include_self=True)))
        started, profile, backend = time.monotonic(), self.profile_slug, self.profile.backend

        async def observe() -> None:
            while self._spawn_pending or getattr(self, "_start_pending", False):
                await asyncio.sleep(0.1)
            if self.ready:
                metrics.SPAWN_DURATION.labels(profile, backend).observe(time.monotonic() - started)

        self._metrics_task = asyncio.ensure_future(observe())

    def record_failure(self, reason: str) -> None:
        """Count a spawn that failed after it was accepted (no free GPU, SLURM refused, job failed, ...)."""
        metrics.SPAWN_FAILURES.labels(self.profile_slug or "(default)", reason).inc()

    def enforce_quotas(self, profile: Profile) -> None:
        """Refuse (429) a spawn that would exceed a quota, saying what is in use."""
        try:
            check_quotas(
                self.deployment.quotas, self.user.name, self.user_groups(), bool(self.user.admin), profile, self.active_servers()
            )
        except QuotaExceeded as exceeded:
            self.log.info("Quota refused %s: %s", self._log_name, exceeded)
            metrics.SPAWN_FAILURES.labels(profile.slug, "quota").inc()
            raise refusal(429, f"{exceeded} Stop one of your servers on the home page first.") from None

    @property
    def profile(self) -> Profile:
        """The profile of the current or last start, as the user's choices shaped it."""
        return self.effective_profile()

    def effective_profile(self) -> Profile:
        """The YAML profile with this server's choices applied (cores, memory, time, partition, ...).

        Built once per (YAML profile, choices): polls and the home page read it often.
        """
        from hpclab_hub.config.user_choices import with_choices

        profile = self.deployment.profile(self.profile_slug)
        if profile is None:
            raise web.HTTPError(400, f"Profile {self.profile_slug!r} is not in the deploy YAML any more.")
        key = (id(profile), tuple(sorted(self.user_choices.items())))
        cached = getattr(self, "_effective", None)
        if cached is None or cached[0] != key:
            self._effective = cached = (key, with_choices(profile, dict(self.user_choices)))
        return cached[1]

    def walltime_limits(self) -> tuple[int | None, int | None]:
        """(current wall time with extensions, the most it may become) in seconds; None without a limit.

        The most is the profile's maximum, or the cluster's cap (partition MaxTime, QoS MaxWall) where
        that is lower: SLURM would refuse, or silently exceed, what the QoS does not allow.
        """
        current, longest, _ = self._walltime_bounds()
        return current, longest

    def _walltime_bounds(self) -> tuple[int | None, int | None, str]:
        """``walltime_limits`` and what sets the most: "this profile's maximum" or the cluster's limit."""
        from hpclab_hub.config.user_choices import longest_time

        profile = self.profile
        if not profile.time_limit:
            return None, None, ""
        longest, source = longest_time(profile) or profile.time_limit, "this profile's maximum"
        if self.cluster_cap_seconds and self.cluster_cap_seconds < longest:
            longest, source = self.cluster_cap_seconds, self.cluster_cap_source or "the cluster's limit"
        return profile.time_limit + self.extended_seconds, max(longest, profile.time_limit), source

    async def extend_walltime(self, minutes: int) -> float:
        """Add ``minutes`` to the running server's wall time, within its profile's maximum; the new end (epoch).

        On SLURM the job's limit is raised (``scontrol update``, the hub's operator rights); on a
        local backend the hub moves its own deadline (and the early save signal with it).
        """
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 7 * 24 * 60:
            raise web.HTTPError(400, "minutes: a whole number of minutes between 1 and 10080")
        import asyncio

        lock = getattr(self, "_extend_lock", None)
        if lock is None:  # one per server: a second extension waits for the first and checks against its new end
            lock = self._extend_lock = asyncio.Lock()
        async with lock:
            return await self._extend_walltime_now(minutes)

    async def _extend_walltime_now(self, minutes: int) -> float:
        """``extend_walltime``'s work, run by one extension of this server at a time."""
        if not self.ready:
            raise web.HTTPError(409, "The server is not running.")
        current, longest, source = self._walltime_bounds()
        if not self.job_end_epoch or current is None or longest is None:
            raise web.HTTPError(400, "minutes: this server has no wall time to extend")
        wanted = current + minutes * 60
        if wanted > longest:
            raise web.HTTPError(
                400, f"minutes: {minutes} more would make the wall time {format_duration(wanted)}, past {source} "
                f"{format_duration(longest)} ({format_duration(max(0, longest - current))} may still be added)"
            )
        await self.apply_extension(wanted)
        self.extended_seconds += minutes * 60
        self.job_end_epoch += minutes * 60
        self._early_signal_sent = False
        if getattr(self, "orm_spawner", None) is not None:
            self.orm_spawner.state = self.get_state()
            self.db.commit()
        self.log.info("Extended %s by %d min: wall time %s, ends %s", self._log_name, minutes, format_duration(wanted),
                      time.strftime("%H:%M:%S UTC", time.gmtime(self.job_end_epoch)))
        return self.job_end_epoch

    def relaunch_url(self) -> str:
        """A link that starts this server again with the same profile and choices ('' if it never started)."""
        from urllib.parse import urlencode

        options = dict(getattr(self.orm_spawner, "user_options", None) or {}) if getattr(self, "orm_spawner", None) else {}
        if not options.get("profile") or self.deployment.profile(str(options["profile"])) is None:
            return ""
        from hpclab_hub.config.user_choices import CHOICE_KEYS

        query = {f"opt-{key}": options[key] for key in ("profile", *CHOICE_KEYS) if key in options}
        base = self.hub.base_url if getattr(self, "hub", None) else "/hub/"
        path = f"{base}spawn/{self.user.name}" + (f"/{self.name}" if self.name else "")
        return f"{path}?{urlencode(query)}"

    def profile_env(self) -> dict[str, str]:
        """Environment every server gets from its profile (backend env first, profile env wins)."""
        profile = self.profile
        env = dict(getattr(self.deployment.backends[profile.backend], "environment", {}))
        env.update(profile.environment)
        env["HPCLAB_PROFILE"] = profile.slug
        env["HPCLAB_BACKEND"] = profile.backend
        # each server its own JupyterLab workspace (open tabs, layout), in the home it starts in: a new
        # named server does not reopen the tabs of another one
        env.setdefault("JUPYTERLAB_WORKSPACES_DIR", f".jupyter/lab/workspaces/{self.name or 'default'}")
        if self.deployment.culling.enabled:
            # report activity (and busy kernels) often enough for this profile's idle timeout
            every = activity_interval(self.deployment.culling.timeout_for(profile))
            env["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(every)
            env["HPCLAB_BUSY_CHECK_SECONDS"] = str(every)
        examples = self.deployment.examples
        if examples.delivered:  # copied into <root>/examples by the hpclab.examples server extension, as the user
            env["HPCLAB_EXAMPLES_DIR"] = str(examples.source_dir)
            env["HPCLAB_EXAMPLES_TARGET"] = examples.folder
        walltime = self.deployment.walltime
        env["HPCLAB_WALLTIME_WARN_SECONDS"] = str(walltime.warn_before)
        env["HPCLAB_WALLTIME_SAVE_SECONDS"] = str(walltime.save_before or 0)
        return env

    def server_args(self) -> list[str]:
        """Server arguments every backend adds.

        JupyterLab's site settings come from hpclab/lab_settings (autosave every 15 s; no news pop-up);
        hpclab.walltime and the @hpclab/walltime plugin show the time left, warn and save open documents
        before the end; kernels, not the server, are stopped first when memory runs out (hpclab.oom_guard);
        with culling on, busy kernels count as activity (see hpclab.busy_activity).
        """
        import hpclab

        from hpclab_hub.kernels import kernel_server_args

        package = Path(hpclab.__file__).parent
        args = [f"--LabApp.app_settings_dir={package / 'lab_settings'}"]
        if (package / "labextensions").is_dir():  # built by `make labextension` (platform/walltime-labextension)
            args.append(f"--LabApp.extra_labextensions_path={package / 'labextensions'}")
        else:
            self.log.warning("hpclab: JupyterLab's wall-time plugin is not built (make labextension)")
        args += kernel_server_args(self.profile.kernels, self.profile.initial_kernel)  # only the profile's kernels
        extensions = ["hpclab.walltime", "hpclab.oom_guard", "hpclab.examples"] + (["hpclab.busy_activity"] if self.deployment.culling.enabled else [])
        args += [f"--ServerApp.jpserver_extensions={name}=True" for name in extensions]
        return args

    def get_state(self) -> dict:
        state = super().get_state()
        if self.profile_slug:
            state["profile"] = self.profile_slug
        if self.job_end_epoch:
            state["job_end"] = self.job_end_epoch
        if self.end_reason:
            state["end_reason"] = self.end_reason
        if self.chosen_at:
            state["chosen_at"] = self.chosen_at
        if self.user_choices:
            state["choices"] = dict(self.user_choices)
        if self.extended_seconds:
            state["extended"] = self.extended_seconds
        if self.cluster_cap_seconds:
            state["cluster_cap"] = [self.cluster_cap_seconds, self.cluster_cap_source]
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.profile_slug = state.get("profile", "")
        self.job_end_epoch = float(state.get("job_end", 0))
        self.end_reason = state.get("end_reason", "")
        self.chosen_at = float(state.get("chosen_at", 0))
        self.user_choices = dict(state.get("choices", {}))
        self.extended_seconds = int(state.get("extended", 0))
        cap_seconds, cap_source = state.get("cluster_cap") or (0, "")
        self.cluster_cap_seconds, self.cluster_cap_source = int(cap_seconds), str(cap_source)

    def start_wall_clock(self) -> None:
        """The server runs from now: its wall time ends after the profile's time limit."""
        limit = self.profile.time_limit
        self.job_end_epoch = time.time() + limit if limit else 0.0

    def server_summary(self) -> dict[str, str]:
        """What the home page lists for this server: profile, backend, state and time left."""
        profile = self.deployment.profile(self.profile_slug) if self.profile_slug else None
        if self.ready:
            state = "running"
            job = getattr(self, "job_id", "")
            if job:
                state += f" (SLURM job {job})"
        elif self.pending:
            state = "starting" if self.pending == "spawn" else self.pending
        else:
            state = "stopped" + (f": {self.end_reason}" if self.end_reason else "")
        backend = ""
        if profile is not None:
            kind = self.deployment.backends[profile.backend].type
            backend = f"{profile.backend} ({'SLURM cluster' if kind == 'slurm' else 'this server'})"
        choices = ""
        if profile is not None and self.user_choices:
            from hpclab_hub.spawner.form import resources_text

            effective = self.effective_profile()
            if self.extended_seconds and effective.time_limit:  # the wall time it runs with now, extensions included
                effective = effective.model_copy(update={"time_limit": effective.time_limit + self.extended_seconds})
            choices = resources_text(effective)
            slurm = effective.slurm
            choices += "".join(f", {key} {getattr(slurm, key)}" for key in ("partition", "account", "qos", "reservation")
                               if key in self.user_choices and slurm is not None)
        return {
            "choices": choices,
            "relaunch": "" if self.active else self.relaunch_url(),
            "profile": profile.display_name if profile else "",
            "backend": backend,
            "state": state,
            "time_left": self.time_left_text or ("no limit" if self.ready else ""),
        }

    @property
    def time_left_text(self) -> str:
        """'1 h 05 min left (ends 14:05 UTC)' for the home page, '' without a limit."""
        if not self.job_end_epoch or not self.active:
            return ""
        left = max(0, int(self.job_end_epoch - time.time()))
        hours, minutes = divmod(left // 60, 60)
        ends = time.strftime("%H:%M UTC", time.gmtime(self.job_end_epoch))
        span = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {left % 60:02d} s"
        return f"{span} left (ends {ends})"
