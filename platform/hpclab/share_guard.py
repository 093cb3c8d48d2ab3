"""A revoked share shuts the visitor out of what they already have open (issue 30).

JupyterHub checks a visitor's access when a request arrives; a WebSocket, once open, is never asked again: after alice
revokes bob's share, the notebook bob has open would go on syncing his edits into hers (jupyter-collaboration's room)
and his kernel connection would go on running code. This server extension notes every WebSocket the server opens and,
every few seconds, asks the hub again (through the server's own HubOAuth, past its cache) whether each visitor's token
still gives access to this server; a connection whose answer is no is closed, and the lab's attempts to reconnect are
refused like any request. The owner's own connections are never asked: a server nobody visits asks nothing.
A connection whose visitor's share no longer allows what it was opened for (an edit share made read-only, say: a
kernel's connection needs ``execute``) is closed too; this extension also puts hpclab.share_access in place.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from tornado.ioloop import PeriodicCallback
from tornado.websocket import WebSocketHandler

from hpclab import share_access

#: every WebSocket this server has opened and not yet forgotten (closed handlers fall out when collected)
OPEN: weakref.WeakSet[WebSocketHandler] = weakref.WeakSet()
#: how often visitors' connections are checked, in ms (a revoke takes effect within this plus HubOAuth's cache)
CHECK_EVERY_MS = 5_000


def _track_websockets() -> None:
    """Note each WebSocket handler as it opens: every Jupyter WebSocket handler reaches WebSocketHandler.get."""
    opening = WebSocketHandler.get
    if getattr(opening, "hpclab_tracked", False):
        return

    async def get(self: WebSocketHandler, *args: Any, **kwargs: Any) -> None:
        OPEN.add(self)
        await opening(self, *args, **kwargs)

    get.hpclab_tracked = True  # type: ignore[attr-defined]
    WebSocketHandler.get = get  # type: ignore[method-assign]


async def still_allowed(hub_auth: Any, token: str | None) -> bool:
    """Whether a visitor's token still gives access to this server, as the hub says now (not from the cache)."""
    user = await hub_auth.user_for_token(token, use_cache=False, sync=False) if token else None
    return bool(user) and bool(hub_auth.check_scopes(hub_auth.access_scopes, user))


async def sweep(server_app: Any, owner: str) -> None:
    """Close every open connection of a visitor whose access is gone."""
    # JupyterHub's identity provider, set by its single-user extension (which may load after this one)
    hub_auth, log = getattr(server_app.identity_provider, "hub_auth", None), server_app.log
    if hub_auth is None:
        return
    answers: dict[str | None, bool] = {}  # one question to the hub per visitor's token and sweep
    for handler in list(OPEN):
        connection = handler.ws_connection
        visitor = getattr(handler, "_jupyterhub_user", None)
        if connection is None or connection.is_closing() or visitor is None or visitor.name == owner:
            continue
        token = hub_auth.get_token(handler)
        try:
            if token not in answers:
                answers[token] = await still_allowed(hub_auth, token)
            # and whether their share still allows what the connection was opened for (hpclab.share_access)
            allowed = answers[token] and await share_access.still_may(handler, visitor)
        except Exception as error:  # the hub is not answering: keep the connection, ask again next time
            log.warning("hpclab share guard: cannot ask the hub about %s: %s", visitor.name, error)
            continue
        if not allowed:
            log.warning("hpclab share guard: %s's access ended; closing %s", visitor.name, handler.request.path)
            handler.close(1008, "access to this server was revoked")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hpclab.share_guard"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    owner = os.environ.get("JUPYTERHUB_USER", "")
    if not owner:  # not a JupyterHub server: no visitors
        return
    _track_websockets()
    share_access.install()
    PeriodicCallback(lambda: sweep(server_app, owner), CHECK_EVERY_MS).start()
