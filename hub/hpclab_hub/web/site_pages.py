"""Hub pages for links that start things: a preselected profile on the form, and "open this example".

* ``/hub/spawn?profile=SLUG`` and JupyterHub's ``/hub/spawn?opt-profile=SLUG&opt-cpus=4`` show the form
  with those choices filled in; only the form's POST (same origin, XSRF-checked) starts a server.
  JupyterHub itself starts a server at once for a GET with ``opt-`` arguments, so a page on any other
  site could start servers for whoever visits it.
* ``/hub/hpclab/open?profile=SLUG&path=examples/NAME.ipynb`` opens a notebook in a server of that
  profile: a running one if the user has it, else a new named server (named after the profile)
  that starts and then opens the notebook. For courses and docs: one link, the right kernel and
  resources. ``&git=FOLDER`` in place of ``path`` names a git entry of the knowledge base: the
  server's nbgitpuller ``/git-pull`` page clones or merges it into ``FOLDER`` and opens it.
"""

from __future__ import annotations

import asyncio
import html
import posixpath
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.pages import SpawnHandler
from tornado import web

from hpclab_hub.config.kb_model import KnowledgeBaseEntry
from hpclab_hub.spawner.access import ProfileRefused, choose_profile
from hpclab_hub.spawner.refusal import refusal

if TYPE_CHECKING:  # the mixin below is checked as the Authenticator it sits in front of
    from jupyterhub.auth import Authenticator as _AuthenticatorBase
else:
    _AuthenticatorBase = object


class PreselectingSpawnHandler(SpawnHandler):
    """JupyterHub's spawn page, except that a link's choices (``?profile=SLUG``, ``?opt-KEY=VALUE``) fill in the
    form instead of starting a server, and a named server this request created is forgotten again unless it started.

    JupyterHub records a new named server as soon as its form is shown or its start is tried; a start
    refused before anything ran (quota, forged choice) would leave a stopped server behind that counts
    against ``named_server_limit``.
    """

    def _get_user_options(self, query_options: dict) -> dict:
        """A GET never starts anything: its choices only fill in the form (see spawner/spawn_form.link_choices)."""
        if query_options:
            self.log.info("Spawn link for %s: choices shown on the form, nothing started", self.current_user.name)
        return {}

    async def _get(self, user_name, server_name, display_name):
        return await self._forgetting_unstarted(super()._get, user_name, server_name, display_name)

    async def _post(self, user_name, server_name, display_name):
        return await self._forgetting_unstarted(super()._post, user_name, server_name, display_name)

    async def _forgetting_unstarted(self, handle, user_name: str, server_name: str, display_name: str):
        """Run JupyterHub's GET or POST handling; a named server it created is forgotten if nothing started."""
        new = self._is_new_named_server(user_name, server_name)
        try:
            return await handle(user_name=user_name, server_name=server_name, display_name=display_name)
        finally:
            if new:
                await self._forget_unstarted(user_name, server_name)

    async def _wrap_spawn_single_user(self, user, server_name, display_name, spawner, pending_url, options=None):
        """JupyterHub's start from the form (wait up to 1 s, then the progress page), except that a server ready
        within that second is opened at once: the progress page, its assets, its event stream and a second redirect
        (about 0.4 s of a click's wait, issue 32) are skipped."""
        try:
            if spawner._spawn_future and spawner._spawn_future.done():  # an explicit start: a past failure is cleared
                spawner._spawn_future = None
            started = asyncio.ensure_future(self.spawn_single_user(user, server_name, display_name, options=options))
            await asyncio.wait([started], timeout=1)
            if started.done() and started.exception():
                error = started.exception()
                self.log.error("Error starting server %s: %s", spawner._log_name, error)
                if isinstance(error, web.HTTPError):
                    raise error
                raise web.HTTPError(500, f"Unhandled error starting server {spawner._log_name}")
            if spawner.ready:  # what the progress page would do next (SpawnPendingHandler), without the page
                return self.redirect(self.get_next_url(default=user.server_url(server_name)))
            return self.redirect(pending_url)
        finally:
            if not spawner.active:  # refused: the form shown next preselects what this request asked for
                spawner.handler = self
                user.spawner.handler = self  # JupyterHub re-renders a refused POST with the default server's form

    def _get_pending_url(self, user, server_name: str) -> str:
        """JupyterHub's progress-page URL without the form's ``_xsrf`` token: JupyterHub posts the form to a URL that
        carries it and copies that query onto the progress page's, where it would sit in the address bar, the
        browser's history and the proxy's access log."""
        parts = urlsplit(super()._get_pending_url(user, server_name))
        query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "_xsrf"]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _is_new_named_server(self, user_name: str, server_name: str) -> bool:
        user = self.find_user(user_name)
        return bool(server_name) and user is not None and server_name not in user.orm_spawners

    async def _forget_unstarted(self, user_name: str, server_name: str) -> None:
        await forget_unstarted(self, user_name, server_name)


async def forget_unstarted(handler: BaseHandler, user_name: str, server_name: str) -> None:
    """Delete the named server record a request made, if nothing was started or is starting for it."""
    user = handler.find_user(user_name)
    orm_spawner = user.orm_spawners.get(server_name) if user is not None else None
    if user is None or orm_spawner is None or orm_spawner.server is not None:
        return
    spawner = user.spawners[server_name]
    if spawner.active:  # starting: its record stays; a start that ended within this request (refused, or failed) did not
        return
    handler.log.info("Forgetting %s: it was never started", spawner._log_name)
    await user._delete_spawner(spawner)
    handler.db.delete(spawner.orm_spawner)
    user.spawners.pop(server_name, None)
    handler.db.commit()


class ForgettingServerAPIHandler(UserServerAPIHandler):
    """JupyterHub's REST start of a server, except that a new named server whose start was refused before anything
    ran is forgotten again, as on the form: it would count against ``named_server_limit`` while it lingers."""

    async def post(self, user_name: str, server_name: str = "") -> None:
        user = self.find_user(user_name)
        new = bool(server_name) and user is not None and server_name not in user.orm_spawners
        try:
            await super().post(user_name, server_name)
        finally:
            if new:
                await forget_unstarted(self, user_name, server_name)


def spawn_routes() -> list[tuple[str, type]]:
    """Routes that replace JupyterHub's own /spawn pages and REST start (authenticator handlers are matched first)."""
    return [
        (r"/spawn", PreselectingSpawnHandler),
        (r"/spawn/([^/]+)", PreselectingSpawnHandler),
        (r"/spawn/([^/]+)/([^/]+)", PreselectingSpawnHandler),
        (r"/api/users/([^/]+)/servers/([^/]*)", ForgettingServerAPIHandler),
    ]


class SitePagesMixin(_AuthenticatorBase):
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

        user = self.current_user
        entry = self._git_entry(user.spawner.deployment)
        path = "" if entry else safe_notebook_path(self.get_argument("path", ""))
        slug = self.get_argument("profile", "")
        spawner = user.spawner
        try:
            profile = choose_profile(spawner.deployment, slug, spawner.user_groups())
        except ProfileRefused as refused:
            raise self._refused_link(refused) from None
        # a server already running (or starting) with this profile: use it
        for name, running in sorted(user.spawners.items()):
            if running.active and getattr(running, "profile_slug", "") == profile.slug:
                self.redirect(self._target_url(user, name, path, entry))
                return
        name = ""
        if user.spawner.active:  # the default server runs another profile: a named server of this one
            if not self.allow_named_servers:
                what = entry.target if entry else path
                raise web.HTTPError(409, f"Your server runs another profile; stop it to open {what} in {profile.display_name}.")
            name = profile.slug
        target = self._target_url(user, name, path, entry)
        spawn = f"{self.hub.base_url}spawn/{quote(user.name)}" + (f"/{quote(name)}" if name else "")
        self.redirect(spawn + "?" + urlencode({"opt-profile": profile.slug, "next": target}))

    def _refused_link(self, refused) -> web.HTTPError:
        """The refusal of a link to a profile the user may not use, with the way on: the form of those they may."""
        error = refusal(refused.status, str(refused))
        form = f"{self.hub.base_url}spawn"
        error.jupyterhub_html_message = (  # type: ignore[attr-defined]  # shown by JupyterHub's error page
            f'{html.escape(str(refused))} <a href="{html.escape(form)}" id="hpclab-choose-profile">'
            "Choose a profile you may use</a>, "
            "or ask your site's administrators for access."
        )
        return error

    def _git_entry(self, deployment) -> KnowledgeBaseEntry | None:
        """The knowledge base's git entry that ``?git=FOLDER`` names (404 if none): only the YAML's repositories are pulled."""
        folder = self.get_argument("git", "")
        if not folder:
            return None
        for entry in deployment.knowledge_base.entries if deployment.knowledge_base.pulls_git else ():
            if entry.git and entry.target == folder:
                return entry
        raise web.HTTPError(404, f"No git repository of the knowledge base lands in {folder!r}.")

    @staticmethod
    def _target_url(user, server_name: str, path: str, entry: KnowledgeBaseEntry | None) -> str:
        """The notebook's page in the server, or nbgitpuller's /git-pull page that pulls the entry and then opens it."""
        base = user.server_url(server_name)
        if entry is None:
            return base + "lab/tree/" + quote(path)
        opened = entry.target + (f"/{entry.open}" if entry.open else "")
        query = {"repo": entry.git, "targetpath": entry.target, "urlpath": "lab/tree/" + quote(opened)}
        if entry.branch:
            query["branch"] = entry.branch
        return base + "git-pull?" + urlencode(query)
