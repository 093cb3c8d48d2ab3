"""Jupyter server extension: tell JupyterLab how long the job has left, and when SLURM's early signal came.

The scheduler stops a job at its wall time; what is typed in the browser and not yet saved is lost.
``GET <base_url>hpclab/walltime`` answers the job's end time (from SLURM or the local spawner, the
same sources as ``hpclab.session()``), the warning and final-save lead times from the deploy YAML,
and whether SIGUSR2 has arrived: the SLURM backend submits jobs with ``--signal=B:USR2@<save_before>``
so the server hears about the end ahead of the limit. The ``@hpclab/walltime`` JupyterLab plugin polls
it, shows the time left and saves every open document.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop

from .session import walltime_left
from .walltime_signal import EARLY_SIGNAL

#: How often the end time is asked again (an admin may change a job's limit with scontrol).
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
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def refresh(self, now: float) -> None:
        """Read the end time again (SLURM_JOB_END_TIME, squeue or HPCLAB_JOB_END_TIME)."""
        left, source = walltime_left(self.env, self.env.get("SLURM_JOB_ID") or None)
        self.end = None if left is None else now + left.total_seconds()
        self.source = source
        self.read_at = now

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


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the endpoint and the SIGUSR2 handler."""
    state = WalltimeState(
        warn_before=_lead_time("HPCLAB_WALLTIME_WARN_SECONDS", 600),
        save_before=_lead_time("HPCLAB_WALLTIME_SAVE_SECONDS", 120),
    )
    state.refresh(time.time())
    web_app = serverapp.web_app
    web_app.settings["hpclab_walltime"] = state
    route = url_path_join(web_app.settings["base_url"], "hpclab", "walltime")
    web_app.add_handlers(".*$", [(route, WalltimeHandler)])

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
