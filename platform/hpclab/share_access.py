"""Read-only shares (issue 30): a visitor does in this server what the owner's share allows, no more.

A share of alice's server carries JupyterHub scopes (hpclab_hub/web/sharing.py). One with
``custom:jupyter_server:read:*`` and no ``…:write:*`` or ``…:execute:*`` is read-only; one without any of them
(JupyterHub's default share, and what the lab's share dialog sends) gives everything, as before read-only shares.

JupyterHub does not put a share's custom scopes into the visitor's lab token (it resolves an OAuth token's scopes from
the person's roles, not their shares; 6.1.1), so the server asks the hub for its own shares, with its own token, every
few seconds, and holds each visitor to the union of their shares (their own and their groups'). Three places enforce it:

- ``ShareAuthorizer``, Jupyter Server's Authorizer: every request its REST API authorizes (contents, kernels, sessions,
  terminals, the collaboration room) is allowed by action: ``read``, ``write``, ``execute``;
- ``_gate``, before any handler: a request the Authorizer never sees (another extension's: the apps' proxy, git,
  SLURM, modules, nbgitpuller) is a limited visitor's only as a plain GET under the lab's or the REST API's pages;
- ``_read_only_room``: a collaboration room's WebSocket is read-authorized, so a read-only visitor's document updates
  are dropped there; they get the document and everyone's changes, and their cursor is seen.

The owner may do everything; a visitor with no share on record (an admin, or a share just revoked) is asked about
afresh, past the hub's cache: they get everything if the hub still lets them in, else nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import quote

from jupyter_server.auth import Authorizer
from jupyter_server.base.handlers import JupyterHandler
from tornado.web import HTTPError

ACTIONS = frozenset({"read", "write", "execute"})
SCOPE_PREFIX = "custom:jupyter_server:"
#: how long the server keeps the hub's list of its shares, in seconds
REFRESH_S = 5.0
#: Jupyter Server's own REST API, every method of which asks the Authorizer (relative to the base URL)
AUTHORIZED = (
    "api/contents",
    "api/kernels",
    "api/sessions",
    "api/terminals",
    "terminals/websocket/",
    "api/collaboration/",
    "api/events",
)
#: pages a limited visitor may GET, beside those: the lab, its settings and translations, files, the REST API's reads
READABLE = ("lab", "static/", "custom/", "files/", "view/", "nbconvert/", "kernelspecs/", "api/")

#: visitor -> what they may do, as last learnt (read without waiting by the collaboration room)
KNOWN: dict[str, frozenset[str]] = {}
#: a visitor's token with no share on record -> (when asked, whether the hub still lets it in)
_asked: dict[str, tuple[float, bool]] = {}
_shares: dict[str, Any] = {"at": -REFRESH_S, "items": []}
_lock = asyncio.Lock()


def granted(shares: list[dict[str, Any]], name: str, groups: list[str]) -> frozenset[str] | None:
    """What ``name`` (in ``groups``) may do by these shares; None when none of them is theirs."""
    mine = [
        share
        for share in shares
        if (share.get("user") or {}).get("name") == name or (share.get("group") or {}).get("name") in groups
    ]
    if not mine:
        return None
    actions: set[str] = set()
    for share in mine:
        scoped = {
            scope.split("!")[0][len(SCOPE_PREFIX) :].split(":")[0]
            for scope in share.get("scopes", [])
            if scope.startswith(SCOPE_PREFIX)
        }
        actions |= (scoped & ACTIONS) | {"read"} if scoped else ACTIONS  # a share of access only: everything
    return frozenset(actions)


async def _server_shares(hub_auth: Any) -> list[dict[str, Any]]:
    async with _lock:
        if time.monotonic() - _shares["at"] >= REFRESH_S:
            owner, server = os.environ.get("JUPYTERHUB_USER", ""), os.environ.get("JUPYTERHUB_SERVER_NAME", "")
            url = f"{hub_auth.api_url.rstrip('/')}/shares/{quote(owner)}/{quote(server)}"
            answer = await hub_auth._api_request("GET", url)
            _shares.update(at=time.monotonic(), items=(answer or {}).get("items", []))
        return list(_shares["items"])


async def visitor_actions(handler: Any, user: Any) -> frozenset[str]:
    """What the person behind ``handler``'s request may do in this server."""
    hub_auth = getattr(handler.identity_provider, "hub_auth", None)
    if hub_auth is None or user.username == os.environ.get("JUPYTERHUB_USER"):
        return ACTIONS
    hub_user = getattr(user, "hub_user", {}) or {}
    actions = granted(await _server_shares(hub_auth), user.username, hub_user.get("groups") or [])
    if actions is None:  # not a share's: an admin the hub lets in, or a share revoked since the hub's cache
        from hpclab.share_guard import still_allowed

        token = hub_auth.get_token(handler) or ""
        at, allowed = _asked.get(token, (-REFRESH_S, False))
        if time.monotonic() - at >= REFRESH_S:
            allowed = await still_allowed(hub_auth, token)
            _asked[token] = (time.monotonic(), allowed)
        actions = ACTIONS if allowed else frozenset()
    KNOWN[user.username] = actions
    return actions


async def still_may(handler: Any, user: Any) -> bool:
    """Whether a visitor's open WebSocket is still theirs to keep: what it was authorized for, or everything if it never
    was (another extension's: only a visitor who may do everything opens it)."""
    needs = getattr(handler, "_hpclab_action", None)
    actions = await visitor_actions(handler, user)
    return actions == ACTIONS if needs is None else needs in actions


def _wanted(handler: Any, action: str, resource: str) -> str:
    """The action a request needs: a collaboration session (a document's room id) and listening to events only read."""
    if type(handler).__name__ == "DocSessionHandler" or (resource == "events" and action == "execute"):
        return "read"
    return action


class ShareAuthorizer(Authorizer):
    """Jupyter Server's Authorizer for a shared server: the hub's access check, then the visitor's share."""

    async def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        hub_auth = getattr(self.identity_provider, "hub_auth", None)
        if hub_auth is not None and not hub_auth.check_scopes(hub_auth.oauth_scopes, user.hub_user):
            return False
        wanted = _wanted(handler, action, resource)
        handler._hpclab_action = wanted  # what an open WebSocket keeps needing (hpclab.share_guard asks again)
        allowed = wanted in await visitor_actions(handler, user)
        if not allowed:
            self.log.warning("hpclab share access: %s may not %s %s", user.username, action, resource)
        return allowed


async def _gate(handler: JupyterHandler) -> None:
    """Refuse a limited visitor what the Authorizer never sees, save plain reads of the lab's pages and the REST API."""
    user = handler.current_user
    if user is None or handler._finished:
        return
    path = handler.request.path[len(handler.base_url) :] if handler.request.path.startswith(handler.base_url) else ""
    if path.startswith(AUTHORIZED):
        return
    plain_read = handler.request.method in ("GET", "HEAD") and "upgrade" not in handler.request.headers
    if plain_read and path.startswith(READABLE):
        return
    if await visitor_actions(handler, user) != ACTIONS:
        handler.log.warning("hpclab share access: %s may not %s %s", user.username, handler.request.method, path)
        raise HTTPError(403, "your share of this server does not allow this")


def _guard_handlers() -> None:
    """Run ``_gate`` after every Jupyter handler has found its user."""
    preparing = JupyterHandler.prepare
    if getattr(preparing, "hpclab_gated", False):
        return

    async def prepare(self: JupyterHandler, *args: Any, **kwargs: Any) -> Any:
        result = await preparing(self, *args, **kwargs)
        await _gate(self)
        return result

    prepare.hpclab_gated = True  # type: ignore[attr-defined]
    JupyterHandler.prepare = prepare  # type: ignore[method-assign]


def _read_only_room() -> None:
    """Drop the document updates a visitor who may not write sends into a collaboration room."""
    try:
        from jupyter_server_ydoc.handlers import YDocWebSocketHandler
    except ImportError:  # no real-time collaboration installed
        return
    receiving = YDocWebSocketHandler.on_message
    if getattr(receiving, "hpclab_read_only", False):
        return

    async def on_message(self: Any, message: bytes) -> Any:
        name = self.current_user.username
        # y-protocols: 0 = sync, then 1 = the sender's missing updates (step 2) or 2 = an update: both change the doc
        changes = len(message) > 1 and message[0] == 0 and message[1] in (1, 2)
        if changes and name != os.environ.get("JUPYTERHUB_USER") and "write" not in KNOWN.get(name, frozenset()):
            return None
        return await receiving(self, message)

    on_message.hpclab_read_only = True  # type: ignore[attr-defined]
    YDocWebSocketHandler.on_message = on_message


def install() -> None:
    """Enforce the visitors' shares in this server (with ``--ServerApp.authorizer_class`` set to ShareAuthorizer)."""
    _guard_handlers()
    _read_only_room()
