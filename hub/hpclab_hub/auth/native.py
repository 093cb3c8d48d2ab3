"""Local accounts on the embedded default: the first admin, and accounts an admin adds from the shell."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Float, Integer, Unicode

from hpclab_hub.auth.event_expiry import EventExpiryMixin
from hpclab_hub.auth.login_security import LoginLockoutMixin, SignupRateLimit, UsernamePolicyMixin
from hpclab_hub.auth.native_pages import ApproveAccount, AuthorizationPage, DiscardAccount, GuardedSignUpHandler
from hpclab_hub.web.site_pages import SitePagesMixin


def set_account(db, username: str, password: str) -> bool:
    """Create or update an approved local account with a bcrypt-hashed password; True if it was new."""
    return store_account(db, username, bcrypt.hashpw(password.encode(), bcrypt.gensalt()))


def store_account(db, username: str, hashed: bytes) -> bool:
    """Create or update an approved local account with this bcrypt hash; True if it was new."""
    info = UserInfo.find(db, username)
    created = info is None
    if created:
        info = UserInfo(username=username, password=hashed, is_authorized=True)
        db.add(info)
    else:
        info.password = hashed
        info.is_authorized = True
    db.commit()
    return created


def generate_password() -> str:
    """A password a person can type: 4 groups of 4 URL-safe characters."""
    raw = secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def set_admin_passwords(db, names: list[str], password: str) -> list[str]:
    """Give each admin an approved account with ``password`` (unchanged where it already is); the names set."""
    changed = []
    for name in sorted(names):
        info = UserInfo.find(db, name)
        if info is None or not info.is_valid_password(password) or not info.is_authorized:
            set_account(db, name, password)
            changed.append(name)
    return changed


def other_password(hashes: dict[str, bytes], password: str) -> list[str]:
    """The names whose stored bcrypt hash is not of ``password`` (a quarter of a second of CPU each: off the loop)."""
    return sorted(name for name, hashed in hashes.items() if not bcrypt.checkpw(password.encode(), hashed))


def _password_from_pipe(fd_text: str) -> str:
    """Read (and close) the pipe `hpclab-hub run` wrote the admin password into; '' if there is none."""
    if not fd_text.isdigit():
        return ""
    fd = int(fd_text)
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError:
        return ""
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return b"".join(chunks).decode()


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class HPCLabAuthenticator(SitePagesMixin, EventExpiryMixin, UsernamePolicyMixin, LoginLockoutMixin, NativeAuthenticator):
    """NativeAuthenticator whose first admin exists from the first start (password from env, else generated once),
    with our user-name rule, login lockout, sign-up rate limit, approval page and event accounts' end."""

    admin_password_env = Unicode("HPCLAB_ADMIN_PASSWORD", help="Environment variable with the bootstrap admin's password.").tag(
        config=True
    )
    signup_per_address = Integer(5, help="Sign-ups one address may make within signup_window; 0 = no limit.").tag(config=True)
    signup_window = Float(3600, help="Seconds over which sign-ups per address are counted.").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.signup_limit = SignupRateLimit(self.signup_per_address, self.signup_window, self.guard_store)
        self.ensure_admin_accounts()

    def get_handlers(self, app):
        """NativeAuthenticator's password pages, our sign-up guard and approval page, JupyterHub's own login page.

        nativeauthenticator 1.3.0's login handler uses ``self.statsd``, which JupyterHub 6 removed
        (every login answers 500); JupyterHub's handler calls the same ``authenticate``. Its approval
        page and GET approve/discard links are replaced (see native_pages.py).
        """

        replaced = {r"/login", r"/signup", r"/authorize", r"/authorize/([^/]*)", r"/discard/([^/]*)"}
        kept = [(route, handler) for route, handler in super().get_handlers(app) if route not in replaced]
        return kept + [
            (r"/signup", GuardedSignUpHandler),
            (r"/authorize", AuthorizationPage),
            (r"/authorize/([^/]+)", ApproveAccount),
            (r"/discard/([^/]+)", DiscardAccount),
        ]

    _admin_check: asyncio.Future | None = None

    async def authenticate(self, handler, data):
        """As NativeAuthenticator's (with our lockout and expiry), once the admins' password from the start is in."""
        if self._admin_check is not None:
            await asyncio.shield(self._admin_check)
        return await super().authenticate(handler, data)

    async def _update_admin_passwords(self, hashes: dict[str, bytes], password: str) -> None:
        """Store ``password`` for the admins whose stored one differs (hashing off the loop too)."""
        loop = asyncio.get_running_loop()
        try:
            changed = await loop.run_in_executor(None, other_password, hashes, password)
            for name in changed:
                hashed = await loop.run_in_executor(None, bcrypt.hashpw, password.encode(), bcrypt.gensalt())
                store_account(self.db, name, hashed)
                self.log.info("Admin account %r set from $%s", name, self.admin_password_env)
        except Exception:  # logins must not fail for it: the admins keep the password they had
            self.log.exception("Could not set the admins' password from $%s", self.admin_password_env)

    def ensure_admin_accounts(self) -> None:
        """Give every admin in admin_users an account; never print or log a password from the environment.

        ``hpclab-hub run`` passes the password through a pipe (``<VARIABLE>_FD``), not the environment;
        when JupyterHub is started directly, the variable is read here and removed from os.environ.
        """
        piped = _password_from_pipe(os.environ.pop(f"{self.admin_password_env}_FD", ""))
        from_env = piped or os.environ.pop(self.admin_password_env, "")
        if from_env:
            infos = [UserInfo.find(self.db, name) for name in sorted(self.admin_users)]
            if infos and all(info is not None and info.is_authorized for info in infos) and _running_loop():
                # every admin has an account: whether the password changed is checked beside the hub's start, not
                # before it (bcrypt's quarter of a second per admin on every restart); logins wait for the check
                hashes = {info.username: info.password for info in infos if info is not None}
                self._admin_check = asyncio.ensure_future(self._update_admin_passwords(hashes, from_env))
                return
            for name in set_admin_passwords(self.db, list(self.admin_users), from_env):
                self.log.info("Admin account %r set from $%s", name, self.admin_password_env)
            return
        for name in sorted(self.admin_users):
            if UserInfo.find(self.db, name) is None:
                password = generate_password()
                set_account(self.db, name, password)
                banner = "=" * 64
                print(
                    f"\n{banner}\n  HPCLab admin account created\n    user:     {name}\n    password: {password}\n"
                    f"  Shown once, stored hashed. Set ${self.admin_password_env} to choose it.\n{banner}\n",
                    file=sys.stderr,
                    flush=True,
                )
