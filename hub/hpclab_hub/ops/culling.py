"""Idle culling with a timeout per profile: jupyterhub-idle-culler with our arbiter hook.

jupyterhub-idle-culler has one ``--timeout``; its ``cull_arbiter_hook`` decides per server. The hub
passes the profiles' timeouts to the culler service in ``HPCLAB_IDLE_TIMEOUTS`` (JSON, slug ->
seconds), and ``idle_culler_config.py`` installs :class:`ProfileIdleArbiter`, which reads the
server's profile from its ``user_options`` (a GPU profile can be reclaimed sooner than a CPU one).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hpclab_hub.config.model import Deployment
from hpclab_hub.ops.events import event_line

TIMEOUTS_VARIABLE = "HPCLAB_IDLE_TIMEOUTS"
CULLER_CONFIG = Path(__file__).with_name("idle_culler_config.py")


def activity_interval(timeout: int) -> int:
    """How often servers report activity: a third of the idle timeout, within 5 s .. 5 min."""
    return max(5, min(300, timeout // 3))


def profile_timeouts(deployment: Deployment) -> dict[str, int]:
    """Every profile's idle timeout in seconds (its own ``idle_timeout`` or ``culling.timeout``)."""
    return {profile.slug: deployment.culling.timeout_for(profile) for profile in deployment.profiles}


class ProfileIdleArbiter:
    """``cull_arbiter_hook``: cull a server once it has been idle longer than its profile allows."""

    def __init__(self, timeouts: Mapping[str, int]) -> None:
        self.timeouts = dict(timeouts)

    @classmethod
    def from_environment(cls) -> ProfileIdleArbiter:
        return cls(json.loads(os.environ.get(TIMEOUTS_VARIABLE, "{}")))

    def limit_for(self, server: Mapping[str, Any], default: int) -> int:
        """The server's profile's timeout; ``default`` (culling.timeout) for an unknown profile."""
        profile = (server.get("user_options") or {}).get("profile")
        return self.timeouts.get(profile, default) if isinstance(profile, str) else default

    def __call__(self, *, inactive: timedelta, inactive_limit: int, server: Mapping[str, Any], **_: Any) -> bool:
        reclaim = inactive.total_seconds() >= self.limit_for(server, inactive_limit)
        if reclaim:  # one hpclab-event line in the hub's log (the culler's output joins it)
            user = re.search(r"/user/([^/]+)/", str(server.get("url") or ""))
            print(
                event_line(
                    "reclaim",
                    unquote(user[1]) if user else "?",
                    (server.get("user_options") or {}).get("profile") or "",
                    str(server.get("name") or ""),
                    idle=int(inactive.total_seconds()),
                ),
                flush=True,
            )
        return reclaim


def culler_service(deployment: Deployment) -> tuple[dict[str, Any], dict[str, Any]]:
    """jupyterhub-idle-culler as a hub-managed service, and the role that lets it stop idle servers."""
    culling = deployment.culling
    service = {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={culling.timeout}",
            f"--cull-every={culling.every}",
            f"--config={CULLER_CONFIG}",
        ],
        "environment": {TIMEOUTS_VARIABLE: json.dumps(profile_timeouts(deployment))},
    }
    role = {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
    return service, role
