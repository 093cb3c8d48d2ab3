"""Login and sign-up guards shared by every authenticator: one user-name rule, lockout, sign-up rate.

Mixed in front of NativeAuthenticator, LDAPAuthenticator and GenericOAuthenticator so that sign-up,
login, the REST API and `hpclab-hub users add` all accept the same names (see usernames.py).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import NoReturn

from tornado import web
from traitlets import Float, Integer, Unicode
from traitlets.config import Configurable

from .usernames import UNIX_NAME_MAX, InvalidUsername, check_username, normalize_username


#: Above this many remembered names/addresses, old entries are dropped (bounded memory under a flood).
MAX_KEYS = 10_000


def client_address(handler) -> str:
    """The address the request came from, as configurable-http-proxy saw it.

    JupyterHub trusts X-Real-Ip, which a client may set itself; the proxy appends the peer's address
    to X-Forwarded-For, so the last entry there is the one nobody outside can forge.
    """
    forwarded = handler.request.headers.get("X-Forwarded-For", "")
    last = forwarded.split(",")[-1].strip()
    if last:
        return last
    connection = getattr(handler.request, "connection", None)
    context = getattr(connection, "context", None)
    address = getattr(context, "address", None)
    return address[0] if isinstance(address, tuple) and address else handler.request.remote_ip


class SlidingWindow:
    """Counts events per key within the last ``window`` seconds (in memory: a restart forgets them)."""

    def __init__(self) -> None:
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def count(self, key: str, window: float, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        events = self._events.get(key)
        if not events:
            return 0
        while events and events[0] <= now - window:
            events.popleft()
        if not events:
            del self._events[key]
            return 0
        return len(events)

    def add(self, key: str, now: float | None = None, keep: float = 86400) -> None:
        now = time.monotonic() if now is None else now
        self._events[key].append(now)
        if len(self._events) > MAX_KEYS:  # many distinct names or addresses: forget what is older than ``keep``
            for stale in [k for k, events in self._events.items() if events[-1] <= now - keep]:
                del self._events[stale]

    def oldest(self, key: str) -> float | None:
        events = self._events.get(key)
        return events[0] if events else None

    def clear(self, key: str) -> None:
        self._events.pop(key, None)


def minutes_text(seconds: float) -> str:
    """'3 minutes' for messages."""
    minutes = max(1, int(round(seconds / 60)))
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


class UsernamePolicyMixin(Configurable):
    """Hub names are NFKC-normalised, lower case, and match usernames.USERNAME_PATTERN within a length."""

    username_max_length = Integer(UNIX_NAME_MAX, help="Longest user name (so that prefix + name fits a Unix account).").tag(config=True)
    only_user = Unicode("", help="A one-person trial (a hub without root): the only name that may log in or sign up; '' = anyone.").tag(config=True)
    only_user_reason = Unicode("", help="Why every other name is refused (shown on the login and sign-up pages).").tag(config=True)

    def refused_by_trial(self, name: str) -> str:
        """The reason ``name`` may not log in or sign up on a one-person trial ('' when it may)."""
        return self.only_user_reason if self.only_user and name != self.only_user else ""

    def normalize_username(self, username: str) -> str:
        return normalize_username(super().normalize_username(normalize_username(username)))

    def validate_username(self, username: str) -> bool:
        """Valid only in normal form: 'Alice' or fullwidth letters sent straight to the REST API are refused."""
        try:
            normal = check_username(username, self.username_max_length)
        except InvalidUsername as invalid:
            self.log.warning("Refused user name %r: %s", username, invalid)
            return False
        if normal != username:
            self.log.warning("Refused user name %r: not in normal form (%r)", username, normal)
            return False
        return True

    def _refuse_on_trial(self, name: str) -> None:
        """On a one-person trial, anyone else is refused before their password is even checked: it could not help."""
        reason = self.refused_by_trial(name)
        if reason:
            self.log.warning("Login refused for %r: one-person trial (only %r)", name, self.only_user)
            raise web.HTTPError(403, "Login refused: %s", reason)

    def _refuse_login(self, name: str, invalid: InvalidUsername, source: str) -> NoReturn:
        self.log.warning("Login refused for %s user name %r: %s", source, name, invalid)
        raise web.HTTPError(403, "Login refused: %s", str(invalid))

    async def authenticate(self, handler, data):
        """Apply the name rule around the authenticator's own check, so a refusal says why.

        A typed name (login form: native, LDAP) is normalised before anything else sees it: 'Alice' or
        fullwidth letters bind to the directory as 'alice', and a name the rule refuses never reaches
        the directory. A name the upstream gives (OIDC's claim, an LDAP lookup) is checked after: one the
        rule refuses is a 403 with the reason (JupyterHub alone would say only "not authorized").
        """
        if isinstance(data, dict) and "username" in data:
            try:
                data = dict(data, username=check_username(str(data["username"]), self.username_max_length))
            except InvalidUsername as invalid:
                self._refuse_login(str(data["username"]), invalid, "typed")
            self._refuse_on_trial(data["username"])
        result = await super().authenticate(handler, data)
        name = result.get("name") if isinstance(result, dict) else result
        if isinstance(name, str):
            self._refuse_on_trial(name)
            try:
                check_username(name, self.username_max_length)
            except InvalidUsername as invalid:
                self._refuse_login(name, invalid, "upstream")
        return result


class LoginLockoutMixin(Configurable):
    """After ``lockout_attempts`` failed logins within ``lockout_window`` seconds for one name from one address
    (or ``lockout_address_attempts`` from one address, any names), that pair (or address) is refused for
    ``lockout_seconds``, right password or not."""

    lockout_attempts = Integer(5, help="Failed logins for one name from one address before they are locked; 0 = never lock.").tag(config=True)
    lockout_address_attempts = Integer(
        50, help="Failed logins from one address (any names) before it is locked; high, since a class may share one NAT address."
    ).tag(config=True)
    lockout_window = Float(900, help="Seconds over which failures are counted.").tag(config=True)
    lockout_seconds = Float(900, help="How long a lock lasts.").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._failures = SlidingWindow()
        self._locked_until: dict[str, float] = {}

    def _lock_left(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 = not locked)."""
        now = time.monotonic()
        if len(self._locked_until) > MAX_KEYS:
            self._locked_until = {k: until for k, until in self._locked_until.items() if until > now}
        return max(0.0, self._locked_until.get(key, 0.0) - now)

    def _record_failure(self, key: str) -> None:
        self._failures.add(key)
        limit = self.lockout_address_attempts if key.startswith("addr:") else self.lockout_attempts
        if limit and self._failures.count(key, self.lockout_window) >= limit:
            self._locked_until[key] = time.monotonic() + self.lockout_seconds
            self._failures.clear(key)

    async def authenticate(self, handler, data):
        name = normalize_username(str((data or {}).get("username", "")))
        address = client_address(handler) if handler is not None else ""
        # a name is locked per address: a stranger elsewhere cannot lock alice (or admin) out of her own login
        keys = [f"user:{name}@{address}"] + ([f"addr:{address}"] if address else [])
        left = max(self._lock_left(key) for key in keys)
        if left:
            self.log.warning("Login refused for %r from %s: locked after repeated failures", name, address)
            raise web.HTTPError(429, f"Too many failed logins. Try again in {minutes_text(left)}.")
        result = await super().authenticate(handler, data)
        if result:
            self._failures.clear(keys[0])
        else:
            for key in keys:
                self._record_failure(key)
        return result


class SignupRateLimit:
    """At most ``per_address`` sign-ups from one address within ``window`` seconds."""

    def __init__(self, per_address: int, window: float) -> None:
        self.per_address = per_address
        self.window = window
        self._signups = SlidingWindow()

    def wait_for(self, address: str) -> float:
        """Seconds until ``address`` may sign up again (0 = now)."""
        if not self.per_address or self._signups.count(address, self.window) < self.per_address:
            return 0
        oldest = self._signups.oldest(address) or time.monotonic()
        return max(0.0, oldest + self.window - time.monotonic())

    def record(self, address: str) -> None:
        self._signups.add(address)

