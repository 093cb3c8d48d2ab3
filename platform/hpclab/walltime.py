"""Jupyter server extension: tell JupyterLab how long the job has left, and when SLURM's early signal came.

The scheduler stops a job at its wall time; what is typed in the browser and not yet saved is lost.
``GET <base_url>hpclab/walltime`` answers the job's end time (from SLURM or the local spawner, the
same sources as ``hpclab.session()``), the warning and final-save lead times from the deploy YAML,
and whether SIGUSR2 has arrived: the SLURM backend submits jobs with ``--signal=B:USR2@<save_before>``
so the server hears about the end ahead of the limit. The ``@hpclab/walltime`` JupyterLab plugin polls
it, shows the time left and saves every open document.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback

from .session import walltime_left
from .walltime_signal import EARLY_SIGNAL

#: How often the end time is asked again (an admin may change a job's limit with scontrol).
HUB_CHECK_SECONDS = 30  # how often a server asks the hub for its end (an extension elsewhere shows within this)
REFRESH_SECONDS = 300.0


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hpclab.walltime"}]


@dataclass
class WalltimeState:
    """The job's end as last read, the lead times, and when the early signal arrived."""

    warn_before: float
    save_before: float
    end: float | None = None
    source: str | None = None
    read_at: float = 0.0
    signalled_at: float | None = None
    extendable_minutes: int = 0
    end_file: str | None = None
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def refresh(self, now: float) -> None:
        """Read the end time again (squeue, SLURM_JOB_END_TIME, the hub's latest word, or HPCLAB_JOB_END_TIME)."""
        left, source = walltime_left(self.env, self.env.get("SLURM_JOB_ID") or None)
        self.end = None if left is None else now + left.total_seconds()
        self.source = source
        self.read_at = now

    def hub_says(self, end: float | None, extendable_minutes: int) -> None:
        """The hub's answer (after an extension, or a periodic check): kept for kernels in ``end_file`` too."""
        self.extendable_minutes = int(extendable_minutes or 0)
        if end is None or self.env.get("SLURM_JOB_ID"):
            return  # on SLURM, squeue is the live word
        if self.end is not None and abs(float(end) - self.end) < 2:
            return  # nothing moved: keep saying where the end came from
        if self.end_file:
            write_end_file(self.end_file, end)
        self.end, self.source, self.read_at = float(end), "hub", time.time()

    def as_json(self, now: float) -> dict[str, Any]:
        if now - self.read_at >= REFRESH_SECONDS:
            self.refresh(now)
        return {
            "end": self.end,
            "now": now,
            "source": self.source,
            "warn_before": self.warn_before,
            "save_before": self.save_before,
            "signalled": self.signalled_at is not None,
            "extendable_minutes": self.extendable_minutes,
        }


def _lead_time(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


class WalltimeHandler(APIHandler):
    """The job's end and lead times, for the JupyterLab plugin (logged-in owner only)."""

    @web.authenticated
    def get(self) -> None:
        state: WalltimeState = self.settings["hpclab_walltime"]
        self.finish(json.dumps(state.as_json(time.time())))


def write_end_file(path: str, end: float) -> None:
    """Write the job's end (epoch seconds) where hpclab.session() in a kernel reads it; atomic."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(f"{int(end)}\n")
    os.replace(tmp, path)


def _hub_url(suffix: str = "") -> str | None:
    """This server's wall-time URL on the hub's API (None outside a hub)."""
    api, user = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_USER")
    if not api or not user or not os.environ.get("JUPYTERHUB_API_TOKEN"):
        return None
    server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    return f"{api.rstrip('/')}/hpclab/servers/{quote(user)}" + (f"/{quote(server)}" if server else "") + suffix


async def ask_hub(method: str = "GET", suffix: str = "", body: dict | None = None) -> dict:
    """Call this server's wall-time API on the hub with the server's own token; the JSON answer."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError

    url = _hub_url(suffix)
    if url is None:
        raise web.HTTPError(400, "this server does not run under a hub")
    headers = {"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}", "Content-Type": "application/json"}
    try:
        response = await AsyncHTTPClient().fetch(
            url, method=method, headers=headers, request_timeout=30, body=None if body is None else json.dumps(body)
        )
    except HTTPClientError as error:
        message = error.response.body.decode(errors="replace") if error.response is not None else str(error)
        with contextlib.suppress(ValueError):  # a JSON error body from the hub: its message, else the raw text
            message = json.loads(message).get("message", message)
        raise web.HTTPError(error.code if error.code < 600 else 502, message) from None
    return json.loads(response.body)


class ExtendHandler(APIHandler):
    """POST {"minutes": N}: ask the hub for more wall time (the widget's "Extend" button)."""

    @web.authenticated
    async def post(self) -> None:
        state: WalltimeState = self.settings["hpclab_walltime"]
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, 'body must be {"minutes": N}') from None
        answer = await ask_hub("POST", "/extend", {"minutes": body.get("minutes")})
        state.hub_says(answer.get("end"), answer.get("extendable_minutes", 0))
        if os.environ.get("SLURM_JOB_ID"):
            state.refresh(time.time())  # squeue now shows the new limit
        self.finish(json.dumps({**state.as_json(time.time()), "time_limit": answer.get("time_limit")}))


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the endpoints, the SIGUSR2 handler and the periodic check with the hub."""
    state = WalltimeState(
        warn_before=_lead_time("HPCLAB_WALLTIME_WARN_SECONDS", 600),
        save_before=_lead_time("HPCLAB_WALLTIME_SAVE_SECONDS", 120),
    )
    state.refresh(time.time())
    if state.end is not None and not os.environ.get("SLURM_JOB_ID"):
        # kernels started from here inherit the variable and read the (possibly extended) end from the file
        os.makedirs(serverapp.runtime_dir, exist_ok=True)
        state.end_file = os.path.join(serverapp.runtime_dir, f"hpclab-job-end-{os.getpid()}")
        write_end_file(state.end_file, float(os.environ.get("HPCLAB_JOB_END_TIME") or state.end))
        os.environ["HPCLAB_JOB_END_FILE"] = state.env["HPCLAB_JOB_END_FILE"] = state.end_file
    web_app = serverapp.web_app
    web_app.settings["hpclab_walltime"] = state
    route = url_path_join(web_app.settings["base_url"], "hpclab", "walltime")
    web_app.add_handlers(".*$", [(route, WalltimeHandler), (route + "/extend", ExtendHandler)])

    async def check_with_hub() -> None:
        try:
            answer = await ask_hub()
        except Exception as error:  # the hub restarting is not the server's problem
            serverapp.log.debug("hpclab walltime: hub not answering (%s)", error)
            return
        state.hub_says(answer.get("end"), answer.get("extendable_minutes", 0))

    if state.end is not None and _hub_url() is not None:
        IOLoop.current().add_callback(check_with_hub)
        PeriodicCallback(check_with_hub, HUB_CHECK_SECONDS * 1000).start()

    loop = IOLoop.current()

    def log_signal() -> None:
        left = "unknown" if state.end is None else f"{max(0, state.end - time.time()):.0f} s"
        serverapp.log.warning(
            "hpclab walltime: %s received, the job ends soon (time left %s); open JupyterLab pages save now",
            EARLY_SIGNAL.name,
            left,
        )

    def on_signal(_signum: int, _frame: Any) -> None:
        state.signalled_at = time.time()  # plain assignment: safe inside a signal handler
        loop.add_callback(log_signal)  # logging waits for the event loop

    signal.signal(EARLY_SIGNAL, on_signal)
    if state.end is None:
        serverapp.log.info("hpclab walltime: no wall-time limit found")
    else:
        serverapp.log.info(
            "hpclab walltime: job ends in %.0f s (%s); warning %.0f s and final saves %.0f s before",
            state.end - time.time(),
            state.source,
            state.warn_before,
            state.save_before,
        )
