"""Login and sign-up guards shared by every authenticator: one user-name rule, lockout, sign-up rate.

Mixed in front of NativeAuthenticator, LDAPAuthenticator and GenericOAuthenticator so that sign-up,
login, the REST API and `hpclab-hub users add` all accept the same names (see usernames.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tornado import web
from traitlets import Float, Integer, Unicode
from traitlets.config import Configurable

from hpclab_hub.config.usernames import UNIX_NAME_MAX, InvalidUsername, check_username, normalize_username

if TYPE_CHECKING:  # the mixins below are checked as the Authenticator they sit in front of (log, super()'s methods)
    from jupyterhub.auth import Authenticator as _AuthenticatorBase
else:
    _AuthenticatorBase = Configurable

#: Above this many remembered names/addresses, old entries are dropped (bounded memory under a flood).
MAX_KEYS = 10_000
#: Addresses remembered per account as ones it logged in from (exempt from the per-account delay).
KNOWN_ADDRESSES = 5


#: tornado setting: the addresses of the TLS proxy in front of the hub (hub.tls_proxy.trusted_addresses)
TRUSTED_PROXIES = "hpclab_trusted_proxies"


def _trusted(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


def client_address(handler) -> str:
    """The address the request came from, as configurable-http-proxy saw it, or as a trusted TLS proxy saw it.

    JupyterHub trusts X-Real-Ip, which a client may set itself; the proxy appends the peer's address
    to X-Forwarded-For, so the last entry there is the one nobody outside can forge. That holds because
    the proxy is the one door to the hub: the hub's own port refuses every account but the hub's
    (one_door.py), and servers reach the hub API through the proxy too (hub.connect_url).
    When that peer is a TLS proxy in front (hub.tls_proxy.trusted_addresses), the entry it appended before
    is the client it saw; going left stops at the first address that is not a trusted proxy, so whatever a
    client wrote into the header itself (further left) is never read.
    """
    forwarded = [entry.strip() for entry in handler.request.headers.get("X-Forwarded-For", "").split(",")]
    trusted = list(getattr(handler, "settings", {}).get(TRUSTED_PROXIES) or ())
    index = len(forwarded) - 1
    while index > 0 and trusted and _trusted(forwarded[index], trusted):
        index -= 1
    if forwarded[index]:
        return forwarded[index]
    connection = getattr(handler.request, "connection", None)
    context = getattr(connection, "context", None)
    address = getattr(context, "address", None)
    return address[0] if isinstance(address, tuple) and address else handler.request.remote_ip


class GuardStore:
    """Failures, locks, sign-ups and known addresses, kept in a JSON file so that a hub restart forgets nothing.

    Times are wall-clock seconds (they must mean the same after a restart). The file (0600, in the hub's
    private data_dir) is written to a temporary file and renamed over the old one, so a crash leaves the
    old state or the new one, never half a file; an unreadable file is set aside and the hub starts afresh.
    ``path`` None keeps everything in memory.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else None
        self.events: dict[str, list[float]] = {}
        self.locked_until: dict[str, float] = {}
        self.known: dict[str, list[str]] = {}
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self.events = {str(k): [float(t) for t in v] for k, v in data.get("events", {}).items()}
            self.locked_until = {str(k): float(v) for k, v in data.get("locked_until", {}).items()}
            self.known = {str(k): [str(a) for a in v] for k, v in data.get("known", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self.events, self.locked_until, self.known = {}, {}, {}
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_suffix(".unreadable"))

    def save(self) -> None:
        if self.path is None:
            return
        now = time.time()
        for expired in [k for k, until in self.locked_until.items() if until <= now]:  # in place: the guards hold this dict
            del self.locked_until[expired]
        data = {"events": self.events, "locked_until": self.locked_until, "known": self.known}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            json.dump(data, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)


class SlidingWindow:
    """Counts events per key within the last ``window`` seconds (in a GuardStore: kept across restarts)."""

    def __init__(self, store: GuardStore | None = None, prefix: str = "") -> None:
        self.store = store or GuardStore()
        self.prefix = prefix

    @property
    def _events(self) -> dict[str, list[float]]:
        return self.store.events

    def count(self, key: str, window: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        key = self.prefix + key
        events = [t for t in self._events.get(key, []) if t > now - window]
        if events:
            self._events[key] = events
        else:
            self._events.pop(key, None)
        return len(events)

    def add(self, key: str, now: float | None = None, keep: float = 86400) -> None:
        now = time.time() if now is None else now
        self._events.setdefault(self.prefix + key, []).append(now)
        if len(self._events) > MAX_KEYS:  # many distinct names or addresses: forget what is older than ``keep``
            for stale in [k for k, events in self._events.items() if not events or events[-1] <= now - keep]:
                del self._events[stale]

    def oldest(self, key: str) -> float | None:
        events = self._events.get(self.prefix + key)
        return events[0] if events else None

    def clear(self, key: str) -> None:
        self._events.pop(self.prefix + key, None)


def minutes_text(seconds: float) -> str:
    """'3 minutes' (or '20 seconds' under a minute) for messages."""
    if seconds < 60:
        whole = max(1, int(seconds + 0.999))
        return f"{whole} second" + ("s" if whole != 1 else "")
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


class UsernamePolicyMixin(_AuthenticatorBase):
    """Hub names are NFKC-normalised, lower case, and match usernames.USERNAME_PATTERN within a length."""

    username_max_length = Integer(UNIX_NAME_MAX, help="Longest user name (so that prefix + name fits a Unix account).").tag(
        config=True
    )
    only_user = Unicode(
        "", help="A one-person trial (a hub without root): the only name that may log in or sign up; '' = anyone."
    ).tag(config=True)
    only_user_reason = Unicode("", help="Why every other name is refused (shown on the login and sign-up pages).").tag(
        config=True
    )

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


class LoginLockoutMixin(_AuthenticatorBase):
    """Three guards against password guessing, kept across hub restarts (``lockout_state_file``):

    - one name from one address: after ``lockout_attempts`` failures within ``lockout_window`` seconds that pair
      is refused for ``lockout_seconds``, right password or not (a stranger elsewhere cannot lock alice out:
      the address is the one the proxy saw);
    - one address, any names: after ``lockout_address_attempts`` failures, likewise;
    - one name from anywhere (guessing from many addresses): after ``lockout_account_attempts`` failures each
      further attempt waits, 1 s doubling per failure up to ``lockout_account_delay`` (short: anyone can cause
      it); addresses the name logged in from before are exempt, so its owner gets in at once.
    """

    lockout_attempts = Integer(5, help="Failed logins for one name from one address before they are locked; 0 = never lock.").tag(
        config=True
    )
    lockout_address_attempts = Integer(
        50, help="Failed logins from one address (any names) before it is locked; high, since a class may share one NAT address."
    ).tag(config=True)
    lockout_account_attempts = Integer(
        10, help="Failed logins for one name (any addresses) before its further attempts wait; 0 = never."
    ).tag(config=True)
    lockout_window = Float(900, help="Seconds over which failures are counted.").tag(config=True)
    lockout_seconds = Float(900, help="How long a lock of a name from an address, or of an address, lasts.").tag(config=True)
    lockout_account_delay = Float(60, help="Longest wait for one name after lockout_account_attempts failures.").tag(config=True)
    lockout_state_file = Unicode("", help="JSON file keeping failures and locks across restarts; '' = memory only.").tag(
        config=True
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.guard_store = GuardStore(self.lockout_state_file or None)
        self._failures = SlidingWindow(self.guard_store, "login:")
        self._locked_until = self.guard_store.locked_until

    def _lock_left(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 = not locked)."""
        now = time.time()
        if len(self._locked_until) > MAX_KEYS:
            for stale in [k for k, until in self._locked_until.items() if until <= now]:
                del self._locked_until[stale]
        return max(0.0, self._locked_until.get(key, 0.0) - now)

    def _record_failure(self, key: str) -> None:
        self._failures.add(key)
        count = self._failures.count(key, self.lockout_window)
        if key.startswith("name:"):
            limit = self.lockout_account_attempts
            if limit and count >= limit:
                delay = min(self.lockout_account_delay, 2.0 ** (count - limit))
                self._locked_until[key] = time.time() + delay
            return
        limit = self.lockout_address_attempts if key.startswith("addr:") else self.lockout_attempts
        if limit and count >= limit:
            self._locked_until[key] = time.time() + self.lockout_seconds
            self._failures.clear(key)

    def _known_address(self, name: str, address: str) -> bool:
        return bool(address) and address in self.guard_store.known.get(name, [])

    def _remember_address(self, name: str, address: str) -> None:
        if not address:
            return
        known = [a for a in self.guard_store.known.get(name, []) if a != address]
        self.guard_store.known[name] = [*known, address][-KNOWN_ADDRESSES:]
        if len(self.guard_store.known) > MAX_KEYS:
            self.guard_store.known.pop(next(iter(self.guard_store.known)))

    async def authenticate(self, handler, data):
        name = normalize_username(str((data or {}).get("username", "")))
        address = client_address(handler) if handler is not None else ""
        # a name is locked per address: a stranger elsewhere cannot lock alice (or admin) out of her own login
        keys = [f"user:{name}@{address}"] + ([f"addr:{address}"] if address else [])
        left = max(self._lock_left(key) for key in keys)
        if left:
            self.log.warning("Login refused for %r from %s: locked after repeated failures", name, address)
            raise web.HTTPError(429, f"Too many failed logins. Try again in {minutes_text(left)}.")
        account = f"name:{name}"
        wait = 0.0 if self._known_address(name, address) else self._lock_left(account)
        if wait:
            self.log.warning(
                "Login refused for %r from %s: the name had many failed logins, next try in %.0f s", name, address, wait
            )
            raise web.HTTPError(429, f"Too many failed logins for this name. Try again in {minutes_text(wait)}.")
        result = await super().authenticate(handler, data)
        if result:
            self._failures.clear(keys[0])
            self._remember_address(name, address)
        else:
            for key in [*keys, account]:
                self._record_failure(key)
        self.guard_store.save()
        return result


class SignupRateLimit:
    """At most ``per_address`` sign-ups from one address within ``window`` seconds (kept in ``store`` when given)."""

    def __init__(self, per_address: int, window: float, store: GuardStore | None = None) -> None:
        self.per_address = per_address
        self.window = window
        self.store = store or GuardStore()
        self._signups = SlidingWindow(self.store, "signup:")

    def wait_for(self, address: str) -> float:
        """Seconds until ``address`` may sign up again (0 = now)."""
        if not self.per_address or self._signups.count(address, self.window) < self.per_address:
            return 0
        oldest = self._signups.oldest(address) or time.time()
        return max(0.0, oldest + self.window - time.time())

    def record(self, address: str) -> None:
        self._signups.add(address)
        self.store.save()
