"""Our own sign-up guard and approval page for NativeAuthenticator's accounts.

nativeauthenticator 1.3.0 renders names as unquoted HTML attributes on /hub/authorize and approves
or discards accounts with a GET (so a link on any site does it). Here the approval page escapes and
quotes everything, and approve/unapprove/discard are POSTs that JupyterHub checks for its XSRF token.
Sign-up refuses bad names with the reason and limits sign-ups per address; on a one-person trial (a hub
without root, trial.py) it says at once that only the trial's admin can use this hub.
"""

from __future__ import annotations

from jupyterhub.scopes import needs_scope
from nativeauthenticator.handlers import LocalBase, SignUpHandler
from nativeauthenticator.orm import UserInfo
from tornado import web

from hpclab_hub.auth.login_security import client_address, minutes_text
from hpclab_hub.config.usernames import InvalidUsername, check_username


class GuardedSignUpHandler(SignUpHandler):
    """NativeAuthenticator's sign-up with a clear refusal for bad names and a per-address rate limit."""

    async def _refuse(self, status: int, message: str, alert: str = "alert-danger") -> None:
        self.set_status(status)
        html = await self.render_template(
            "signup.html",
            ask_email=self.authenticator.ask_email_on_signup,
            result_message=message,
            alert=alert,
            two_factor_auth=self.authenticator.allow_2fa,
            recaptcha_key=self.authenticator.recaptcha_key,
            tos=self.authenticator.tos,
        )
        self.finish(html)

    async def get(self):
        """On a one-person trial the form says at once that a new account could not log in, and why."""
        if self.authenticator.enable_signup and self.authenticator.only_user:
            return await self._refuse(200, self.authenticator.only_user_reason, alert="alert-warning")
        return await super().get()

    async def post(self):
        if not self.authenticator.enable_signup:
            raise web.HTTPError(404)
        name = self.get_body_argument("username", "", strip=True).lower()
        if self.authenticator.only_user and name != self.authenticator.only_user:
            self.log.warning("Sign-up refused for %r: one-person trial", name)
            return await self._refuse(403, self.authenticator.only_user_reason)
        address = client_address(self)
        limit = self.authenticator.signup_limit
        wait = limit.wait_for(address)
        if wait:
            self.log.warning("Sign-up refused from %s: rate limit", address)
            return await self._refuse(429, f"Too many sign-up requests from your address. Try again in {minutes_text(wait)}.")
        try:
            check_username(self.get_body_argument("username", "", strip=False), self.authenticator.username_max_length)
        except InvalidUsername as invalid:
            return await self._refuse(400, str(invalid))
        limit.record(address)
        return await super().post()


class AuthorizationPage(LocalBase):
    """GET /hub/authorize: every account, escaped and quoted, with POST buttons (admins only)."""

    @needs_scope("admin:users")
    async def get(self):
        accounts = self.db.query(UserInfo).order_by(UserInfo.username).all()
        html = await self.render_template(
            "hpclab-authorize.html", accounts=accounts, ask_email=self.authenticator.ask_email_on_signup
        )
        self.finish(html)


class _AccountAction(LocalBase):
    def _account(self, name: str) -> UserInfo:
        account = UserInfo.find(self.db, name)
        if account is None:
            raise web.HTTPError(404, f"No account {name!r}")
        return account

    def _back(self) -> None:
        self.redirect(self.hub.base_url + "authorize")

    async def _stop_servers(self, name: str) -> None:
        """Stop every server of ``name`` (an account losing its approval keeps nothing running)."""
        user = self.users.get(name)
        if user is None:
            return
        for server_name, spawner in list(user.spawners.items()):
            if spawner.active:
                self.log.info("Stopping %s's server %r: the account is no longer approved", name, server_name)
                await self.stop_single_user(user, server_name)


class ApproveAccount(_AccountAction):
    """POST /hub/authorize/NAME with ``approve`` = 1 or 0 (a GET does nothing: 405)."""

    @needs_scope("admin:users")
    async def post(self, name: str):
        account = self._account(name)
        account.is_authorized = self.get_body_argument("approve", "1") == "1"
        self.db.commit()
        if not account.is_authorized:
            await self._stop_servers(name)
        self.log.info("%s %s the account %r", self.current_user.name, "approved" if account.is_authorized else "unapproved", name)
        self._back()


class DiscardAccount(_AccountAction):
    """POST /hub/discard/NAME: delete a pending (unapproved) account."""

    @needs_scope("admin:users")
    async def post(self, name: str):
        account = self._account(name)
        if account.is_authorized:
            raise web.HTTPError(400, "Approved accounts are not discarded here; unapprove first.")
        await self._stop_servers(name)
        self.db.delete(account)
        self.db.commit()
        if self.users.get(name) is not None:
            self.users.delete(name)
        self.log.info("%s discarded the pending account %r", self.current_user.name, name)
        self._back()
