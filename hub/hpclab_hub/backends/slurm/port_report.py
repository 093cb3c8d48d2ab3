"""How a server in a job tells the hub its port: a hub API handler that accepts one integer and nothing else."""

from __future__ import annotations

import hmac
import json

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from hpclab_hub.backends.slurm.backend import SlurmServer


def parse_port_report(body: bytes) -> int:
    """The port from a report body ``{"port": N}``; any other shape or field is refused (400)."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise web.HTTPError(400, "body must be JSON") from None
    if not isinstance(data, dict) or set(data) != {"port"}:
        raise web.HTTPError(400, 'body must be exactly {"port": <integer>}')
    port = data["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise web.HTTPError(400, "port must be an integer between 1 and 65535")
    return port


class PortReportHandler(APIHandler):
    """POST /hub/api/hpclab/port from inside the job, authenticated by the starting server's own token."""

    async def post(self) -> None:
        port = parse_port_report(self.request.body)
        token = self.get_auth_token() or ""
        user = self.current_user
        if user is None or not token or not hasattr(user, "spawners"):
            raise web.HTTPError(403, "a server token is required")
        for spawner in user.spawners.values():
            job = getattr(spawner, "server_backend", None)
            own_token = getattr(spawner, "api_token", "") or ""
            if (
                isinstance(job, SlurmServer)
                and job.port_reported is not None
                and own_token
                and hmac.compare_digest(own_token, token)
            ):
                job.report_port(port)
                self.set_status(204)
                return
        raise web.HTTPError(409, "no server of this user is waiting for a port with this token")
