"""Local accounts on the embedded default: the first admin, and accounts an admin adds from the shell."""

from __future__ import annotations

import os
import secrets
import sys

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode


def set_account(db, username: str, password: str) -> bool:
    """Create or update an approved local account with a bcrypt-hashed password; True if it was new."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
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


class HPCLabAuthenticator(NativeAuthenticator):
    """NativeAuthenticator whose first admin exists from the first start (password from env, else generated once)."""

    admin_password_env = Unicode(
        "HPCLAB_ADMIN_PASSWORD", help="Environment variable with the bootstrap admin's password."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ensure_admin_accounts()

    def get_handlers(self, app):
        """NativeAuthenticator's pages (sign-up, approval, password change) but JupyterHub's own login page.

        nativeauthenticator 1.3.0's login handler uses ``self.statsd``, which JupyterHub 6 removed
        (every login answers 500); JupyterHub's handler calls the same ``authenticate``.
        """
        return [(route, handler) for route, handler in super().get_handlers(app) if route != r"/login"]

    def ensure_admin_accounts(self) -> None:
        """Give every admin in admin_users an account; never print or log a password from the environment."""
        from_env = os.environ.get(self.admin_password_env)
        for name in sorted(self.admin_users):
            if from_env:
                info = UserInfo.find(self.db, name)
                if info is None or not info.is_valid_password(from_env):
                    set_account(self.db, name, from_env)
                    self.log.info("Admin account %r set from $%s", name, self.admin_password_env)
            elif UserInfo.find(self.db, name) is None:
                password = generate_password()
                set_account(self.db, name, password)
                banner = "=" * 64
                print(
                    f"\n{banner}\n  HPCLab admin account created\n    user:     {name}\n    password: {password}\n"
                    f"  Shown once, stored hashed. Set ${self.admin_password_env} to choose it.\n{banner}\n",
                    file=sys.stderr,
                    flush=True,
                )
