"""Hub pages for links that start things: a preselected profile on the form, and "open this example".

* ``/hub/spawn?profile=SLUG`` shows the form with SLUG preselected (JupyterHub itself would start a
  server at once for any query argument; ``/hub/spawn?opt-profile=SLUG`` still does that).
* ``/hub/hpclab/open?profile=SLUG&path=examples/NAME.ipynb`` opens a notebook in a server of that
  profile: a running one if the user has it, else a new named server (named after the profile)
  that starts and then opens the notebook. For courses and docs: one link, the right kernel and
  resources.
"""

from __future__ import annotations

import posixpath
from urllib.parse import quote, urlencode

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.pages import SpawnHandler
from tornado import web

#: Query arguments of /hub/spawn that preselect on the form instead of starting a server.
PRESELECT_ARGUMENTS = frozenset({"profile"})


class PreselectingSpawnHandler(SpawnHandler):
    """JupyterHub's spawn page, except that ``?profile=SLUG`` preselects a profile instead of spawning."""

    def _get_user_options(self, query_options: dict) -> dict:
        kept = {key: value for key, value in query_options.items() if key not in PRESELECT_ARGUMENTS}
        return super()._get_user_options(kept)


def spawn_routes() -> list[tuple[str, type]]:
    """Routes that replace JupyterHub's own /spawn pages (authenticator handlers are matched first)."""
    return [(r"/spawn", PreselectingSpawnHandler), (r"/spawn/([^/]+)", PreselectingSpawnHandler),
            (r"/spawn/([^/]+)/([^/]+)", PreselectingSpawnHandler)]


class SitePagesMixin:
    """Mixed into every HPCLab authenticator: its handlers come before JupyterHub's, so these pages win."""

    def get_handlers(self, app) -> list:
        return spawn_routes() + list(super().get_handlers(app))


def safe_notebook_path(path: str) -> str:
    """A relative path inside the server's root ('examples/x.ipynb'); anything leaving it is refused (400)."""
    cleaned = posixpath.normpath("/" + path.strip()).lstrip("/")
    if not path.strip() or cleaned in ("", ".") or ".." in path.split("/") or "\\" in path:
        raise web.HTTPError(400, "path must be a file inside your server's folder, e.g. examples/josephson-sweep.ipynb")
    return cleaned


class OpenExampleHandler(BaseHandler):
    """GET /hub/hpclab/open?profile=SLUG&path=PATH: open PATH in a server of profile SLUG, starting one if needed."""

    @web.authenticated
    async def get(self) -> None:
        from .access import ProfileRefused, choose_profile

        user = self.current_user
        path = safe_notebook_path(self.get_argument("path", ""))
        slug = self.get_argument("profile", "")
        spawner = user.spawner
        try:
            profile = choose_profile(spawner.deployment, slug, spawner.user_groups())
        except ProfileRefused as refused:
            raise web.HTTPError(refused.status, str(refused)) from None
        # a server already running (or starting) with this profile: use it
        for name, running in sorted(user.spawners.items()):
            if running.active and getattr(running, "profile_slug", "") == profile.slug:
                self.redirect(self._notebook_url(user, name, path))
                return
        name = ""
        if user.spawner.active:  # the default server runs another profile: a named server of this one
            if not self.allow_named_servers:
                raise web.HTTPError(409, f"Your server runs another profile; stop it to open {path} in {profile.display_name}.")
            name = profile.slug
        target = self._notebook_url(user, name, path)
        spawn = f"{self.hub.base_url}spawn/{quote(user.name)}" + (f"/{quote(name)}" if name else "")
        self.redirect(spawn + "?" + urlencode({"opt-profile": profile.slug, "next": target}))

    @staticmethod
    def _notebook_url(user, server_name: str, path: str) -> str:
        return user.server_url(server_name) + "lab/tree/" + quote(path)
