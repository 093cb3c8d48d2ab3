"""A server's wall time through the hub's REST API: read it, and extend it within the profile's maximum.

    GET  /hub/api/hpclab/servers/{user}[/{server_name}]          -> {"end": ..., "time_limit": ..., "max_time_limit": ...}
    POST /hub/api/hpclab/servers/{user}[/{server_name}]/extend   {"minutes": N} -> the same, with the new end

Allowed to the server's owner (a token or session with the ``servers`` scope on that user), to admins,
and to the server itself (its own API token: the JupyterLab widget goes through the server, which
holds no other credential).
"""

from __future__ import annotations

import hmac
import json
import time

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from hpclab_hub.config.units import format_duration


class ServerWalltimeHandler(APIHandler):
    """GET a server's end time."""

    def _spawner(self, user_name: str, server_name: str):
        user = self.find_user(user_name)
        if user is None or server_name not in user.spawners:
            raise web.HTTPError(404, f"No server {server_name!r} of user {user_name!r}")
        return user.spawners[server_name]

    def _allowed(self, spawner, scope: str) -> bool:
        token = self.get_auth_token() or ""
        own = getattr(spawner, "api_token", "") or ""
        if token and own and hmac.compare_digest(token, own):
            return True
        return self.current_user is not None and self.has_scope(f"{scope}!server={spawner.user.name}/{spawner.name}")

    def _model(self, spawner) -> dict:
        limit, longest = spawner.walltime_limits() if getattr(spawner, "profile_slug", "") else (None, None)
        end = spawner.job_end_epoch or None
        return {
            "server": spawner.name,
            "ready": bool(spawner.ready),
            "end": end,
            "end_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)) if end else None,
            "time_limit": format_duration(limit) if limit else None,
            "max_time_limit": format_duration(longest) if longest else None,
            "extendable_minutes": max(0, (longest - limit) // 60) if limit and longest else 0,
        }

    async def get(self, user_name: str, server_name: str = "") -> None:
        spawner = self._spawner(user_name, server_name or "")
        if not self._allowed(spawner, "read:servers"):
            raise web.HTTPError(403, "Not your server")
        self.finish(json.dumps(self._model(spawner)))


class ServerExtendHandler(ServerWalltimeHandler):
    """POST ``.../extend`` with ``{"minutes": N}``: move the server's end, within its profile's maximum."""

    async def get(self, user_name: str, server_name: str = "") -> None:
        raise web.HTTPError(405, 'POST {"minutes": N} to extend')

    async def post(self, user_name: str, server_name: str = "") -> None:
        spawner = self._spawner(user_name, server_name or "")
        if not self._allowed(spawner, "servers"):
            raise web.HTTPError(403, "Not your server")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, 'body must be JSON: {"minutes": N}') from None
        if not isinstance(body, dict) or set(body) != {"minutes"}:
            raise web.HTTPError(400, 'body must be exactly {"minutes": N}')
        await spawner.extend_walltime(body["minutes"])
        self.finish(json.dumps(self._model(spawner)))


def walltime_routes() -> list[tuple[str, type]]:
    """The API routes (under the hub's /hub/ prefix); an ``extend`` suffix always means the action."""
    return [
        (r"/api/hpclab/servers/([^/]+)/extend", ServerExtendHandler),
        (r"/api/hpclab/servers/([^/]+)/([^/]+)/extend", ServerExtendHandler),
        (r"/api/hpclab/servers/([^/]+)", ServerWalltimeHandler),
        (r"/api/hpclab/servers/([^/]+)/([^/]+)", ServerWalltimeHandler),
    ]
