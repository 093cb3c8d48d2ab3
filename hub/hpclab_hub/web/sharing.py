"""Sharing a running server from the lab (issue 30): jupyter-collaboration's share dialog on JupyterHub's sharing API.

The dialog runs in the owner's lab, on the owner's own origin (``<user>.<public_host>``), and calls the hub's REST API
with the lab's OAuth token. Three things make that work without weakening the per-user origins:

- the lab's token may manage the shares of *that server only* (``shares!server=<owner>/<name>``), list people and
  groups by name, and nothing else. A visitor's token on the same origin gets the intersection with the visitor's own
  permissions: no ``shares!server`` of a server that is not theirs, so a page on alice's server cannot share bob's;
- the hub's API answers cross-origin requests from its users' own origins, never with credentials
  (no ``Access-Control-Allow-Credentials``): a browser sends no hub cookie along, only the token the page holds;
- the home page lists the servers shared with a person, with links to their owners' origins.

A share reads or edits (``SERVER_ACCESS``, JupyterHub custom scopes): one with ``custom:jupyter_server:read:*`` and no
write or execute scope is read-only; one with no such scope (JupyterHub's and the dialog's default) edits, as before.
Each person may grant them on their own servers only; the server itself enforces them (hpclab.share_access).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.web import OutputTransform

#: what a person may do on the hub through the share dialog, besides managing their own servers' shares
SHARE_DIALOG_SCOPES = ["read:users:name", "list:users", "read:groups:name", "list:groups"]
#: what a share may allow on a Jupyter server, besides coming in (``access:servers``); read by hpclab.share_access
SERVER_ACCESS = {
    "custom:jupyter_server:read:*": {"description": "Open and read files and notebooks in the server."},
    "custom:jupyter_server:write:*": {"description": "Change, save, upload, rename and delete files in the server."},
    "custom:jupyter_server:execute:*": {"description": "Run code in the server: kernels, terminals, its apps."},
}


class LabTokenScopes(list):
    """``Spawner.oauth_client_allowed_scopes``: a lab's token manages this server's shares, and sees names.

    A callable, which JupyterHub resolves per server; and a list of the scopes common to every server, because
    ``Spawner.get_env`` writes the option as configured into JSON, which fails for a plain function (JupyterHub 6.1.1).
    """

    def __call__(self, spawner: Any) -> list[str]:
        server = f"server={spawner.user.name}/{spawner.name}"
        # the owner's token may grant read, write or execute on this server (a visitor's holds none of them)
        # and every token knows its person's own groups: a server holds a visitor to the shares of their groups too
        # (hpclab.share_access); without it the visitor's model has no groups and a group's read-only share would edit
        return [f"shares!{server}", *(f"{scope}!{server}" for scope in SERVER_ACCESS), "read:users:groups!user", *self]


#: ``Spawner.server_token_scopes``: JupyterHub's own (the ``server`` role), and this server's shares, so that the server
#: knows what each visitor may do (hpclab.share_access) and its owner can share from a terminal or notebook with
#: $JUPYTERHUB_API_TOKEN (docs/user-guide.md)
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    "shares!server",
    *(f"{scope}!server" for scope in SERVER_ACCESS),
    *SHARE_DIALOG_SCOPES,
]


def user_origins_cors(subdomain_host: str, api_prefix: str) -> type[OutputTransform]:
    """A Tornado output transform: the hub's API (``api_prefix``) readable from a user's own origin, without cookies.

    ``subdomain_host`` is JupyterHub's (``http://hpclab.example.org:8000``); an origin one label below it is a user's.
    """
    parsed = urlparse(subdomain_host)
    port = f":{parsed.port}" if parsed.port else ""
    origin = re.compile(rf"^{re.escape(parsed.scheme)}://[a-z0-9-]+\.{re.escape(parsed.hostname or '')}{re.escape(port)}$")

    class UserOriginsCORS(OutputTransform):
        def __init__(self, request: HTTPServerRequest) -> None:
            asked = request.headers.get("Origin", "")
            self.allowed = asked if request.path.startswith(api_prefix) and origin.match(asked) else ""

        def transform_first_chunk(
            self, status_code: int, headers: HTTPHeaders, chunk: bytes, finishing: bool
        ) -> tuple[int, HTTPHeaders, bytes]:
            if self.allowed:
                headers["Access-Control-Allow-Origin"] = self.allowed
                headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
                headers.add("Vary", "Origin")
            return status_code, headers, chunk

    return UserOriginsCORS


def shared_with(user: Any) -> list[dict[str, Any]]:
    """``template_vars`` entry: the servers others share with ``user`` (directly or through a group), for the home page."""
    if user is None:
        return []
    found = []
    for share in user.all_shared_with_me:
        if share.spawner is None or share.owner is None:
            continue
        owner = user.settings["users"][share.owner]
        found.append(
            {
                "owner": owner.name,
                "server": share.spawner.name,
                "url": owner.server_url(share.spawner.name),
                "running": bool(share.spawner.server),
                "via": f"group {share.group.name}" if share.group is not None else "",
            }
        )
    return sorted(found, key=lambda row: (row["owner"], row["server"]))


def count_group_shares_for_tokens() -> None:
    """Make a share with a group reach its members' tokens, not only their hub pages.

    JupyterHub 6.1.1 adds the shares with a person's groups to what that person may do (``scopes.get_scopes_for`` of a
    user), but for one of their tokens only their own shares: a tutor of a group alice shares with passes her server's
    OAuth login, then every request with the visit's token is refused. Here the expansion of a person's roles, which a
    token's owner scopes start from, also holds their groups' shares (for a user the same scopes are added again
    anyway). Tested by tests/e2e/test_sharing.py and test_share_access.py.
    """
    from jupyterhub import orm, roles, scopes

    expand_roles = roles.roles_to_expanded_scopes
    if getattr(expand_roles, "hpclab_group_shares", False):
        return

    def roles_to_expanded_scopes(held: Any, owner: Any) -> Any:
        expanded = expand_roles(held, owner)
        if isinstance(owner, orm.User):
            for group in owner.groups:
                for share in group.shared_with_me:
                    expanded = expanded | scopes.expand_share_scopes(share)
        return expanded

    roles_to_expanded_scopes.hpclab_group_shares = True  # type: ignore[attr-defined]
    roles.roles_to_expanded_scopes = roles_to_expanded_scopes


def configure_sharing(c: Any, subdomain_host: str | None, base_url: str) -> list[str]:
    """Set up the lab's share dialog and read-only shares; returns the scopes every person's role needs for them."""
    count_group_shares_for_tokens()
    c.JupyterHub.custom_scopes = SERVER_ACCESS
    c.Spawner.oauth_client_allowed_scopes = LabTokenScopes(SHARE_DIALOG_SCOPES)
    c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
    if subdomain_host:
        c.JupyterHub.tornado_settings["transforms"] = [user_origins_cors(subdomain_host, f"{base_url}hub/api/")]
    c.JupyterHub.template_vars = {**dict(c.JupyterHub.template_vars), "hpclab_shared": shared_with}
    return ["shares!user", *(f"{scope}!user" for scope in SERVER_ACCESS), *SHARE_DIALOG_SCOPES]
