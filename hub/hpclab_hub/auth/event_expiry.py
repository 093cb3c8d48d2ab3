"""The end of an event (ops/event_accounts.py): its accounts can no longer log in, their sessions end and their
servers stop. Mixed into the native authenticator: a login of an ended account is refused with the reason, and
every ``event_check_interval`` seconds (15) the hub stops the servers of ended accounts, revokes their tokens and
ends their browser sessions (a new cookie id). Their files are kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyterhub import orm
from tornado import web
from tornado.ioloop import PeriodicCallback

from hpclab_hub.ops import event_accounts

if TYPE_CHECKING:
    from jupyterhub.auth import Authenticator as _AuthenticatorBase
else:
    _AuthenticatorBase = object


class EventExpiryMixin(_AuthenticatorBase):
    """Refuse ended event accounts at login; stop what they still run."""

    event_check_interval = 15.0  # seconds between checks for event accounts whose event has ended
    _event_checker: PeriodicCallback | None = None
    _ended_done: set[str]

    async def authenticate(self, handler, data):
        name = self.normalize_username(str((data or {}).get("username", "")))
        found = event_accounts.account(self.db, name) if name else None
        if found is not None and found.ended():
            self.log.info("Login refused: %s's event %s ended at %s", name, found.event, found.end_text())
            raise web.HTTPError(
                403,
                f"The account {name} was for the event {found.event}, which ended at "
                f"{found.end_text()}: it cannot log in any more.",
            )
        return await super().authenticate(handler, data)

    def get_handlers(self, app) -> list:
        if self._event_checker is None:
            self._ended_done = set()
            self._event_checker = PeriodicCallback(lambda: self._end_events(app), self.event_check_interval * 1000)
            self._event_checker.start()
        return list(super().get_handlers(app))

    async def _end_events(self, app: Any) -> None:
        try:
            for ended in event_accounts.ended_accounts(self.db):
                if ended.username not in self._ended_done:
                    await self._end_account(app, ended)
                    self._ended_done.add(ended.username)
        except Exception:
            self.log.exception("Event accounts: the check for ended events failed")

    async def _end_account(self, app: Any, ended: event_accounts.EventAccount) -> None:
        orm_user = orm.User.find(self.db, ended.username)
        if orm_user is None:
            return
        user = app.users[orm_user]
        for name, spawner in list(user.spawners.items()):
            if spawner.active:
                self.log.info("Event %s ended: stopping %s", ended.event, spawner._log_name)
                spawner.end_reason = f"the event {ended.event} ended at {ended.end_text()}."
                await app.proxy.delete_user(user, name)
                await user.stop(name)
        for token in list(orm_user.api_tokens):
            self.db.delete(token)
        orm_user.cookie_id = orm.new_token()  # every browser session of the account ends
        self.db.commit()
        self.log.info("Event %s ended: %s can no longer log in, its sessions ended", ended.event, ended.username)
