"""The Unix account a hub user's local server runs as: created on first start, or an existing one.

``create`` follows The Littlest JupyterHub's convention: an account ``<prefix><name>`` with no
password and no login shell, its own group, and a home folder made 0700. ``existing`` uses the account
of the same name (LDAP/PAM sites). Without root the hub cannot switch accounts, so it serves only the
account it runs as: ``hub-user`` (``auto`` without root) makes that a one-person trial for the first admin.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hpclab_hub.backends.local.trial import TRIAL_FOLDER, effective_mode, template_home, trial_refusal


class AccountUnavailable(Exception):
    """No account can be used for this user; ``status`` is the HTTP answer and the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UnixAccount:
    """Who a server runs as: name, ids, supplementary groups, home folder."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def from_passwd(cls, entry: pwd.struct_passwd, home: str | None = None) -> UnixAccount:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, home or entry.pw_dir)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def hub_account() -> pwd.struct_passwd:
    """The account the hub process runs as."""
    return pwd.getpwuid(os.geteuid())


def account_name(username: str, mode: str, prefix: str) -> str:
    """The Unix name for hub user ``username``: ``<prefix><name>`` (create) or the name itself (existing)."""
    return f"{prefix}{username}" if mode == "create" else username


def login_uid_min(login_defs: str = "/etc/login.defs") -> int:
    """UID_MIN of login.defs (1000 when unset): accounts below it belong to the system (daemons)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(login_defs).read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "UID_MIN":
                return int(fields[1])
    return 1000


def create_account(name: str, home: str) -> None:
    """useradd a regular account with its own group, no password, no login shell (home is made separately).

    A regular uid (not ``--system``) as TLJH does: the system range is small and shared with daemons.
    """
    result = subprocess.run(
        [
            "useradd",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            home,
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "HPCLab user",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 and _lookup(name) is None:  # another start may have created it meanwhile
        raise AccountUnavailable(f"Could not create the Unix account {name!r}: {result.stderr.strip()}", status=500)


def resolve_account(
    username: str, mode: str, prefix: str, home_base: Path, home_template: str | None, only_user: str | None = None
) -> UnixAccount:
    """The account ``username``'s server runs as, created first in ``create`` mode (root only).

    Never the hub's own account when the hub is root, and never root. ``hub-user`` (``auto`` without root,
    see trial.py): the hub's own account, for ``only_user`` alone, in ~/hpclab-trial unless ``home_template``
    says otherwise. ``create``/``existing`` without root: only the hub user named as the hub's account.
    """
    mode = effective_mode(mode)
    me = hub_account()
    if mode == "hub-user":
        if os.geteuid() == 0:
            raise AccountUnavailable(
                "accounts.mode hub-user runs servers as the hub's own account, and this hub runs as root: servers never "
                "run as root. Use accounts.mode auto (create with root) or create.",
                status=500,
            )
        if not only_user or username != only_user:
            raise AccountUnavailable(trial_refusal(only_user or "(nobody)"), status=403)
        home = template_home(home_template, username, me.pw_name) or os.path.join(me.pw_dir, TRIAL_FOLDER)
        return UnixAccount.from_passwd(me, home)
    name = account_name(username, mode, prefix)
    if os.geteuid() != 0:
        if me.pw_name not in (username, name):
            raise AccountUnavailable(
                f"This hub runs without root (as {me.pw_name!r}), so it cannot start servers under other Unix accounts: "
                f"only the hub user whose account is {me.pw_name!r} can start one here. Ask the admin to run the hub as root "
                "(one account per person) or to use the SLURM backend; for a one-person trial without root, "
                "backends.<name>.accounts.mode: auto.",
                status=403,
            )
        return UnixAccount.from_passwd(me, _home(me, username, home_template))
    entry = _lookup(name)
    if entry is None and mode == "create":
        create_account(name, str(home_base / name))
        entry = _lookup(name)
    if entry is None:
        raise AccountUnavailable(
            f"There is no Unix account {name!r} on this server for hub user {username!r}. "
            "Ask the admin to create it (backends.<name>.accounts.mode: existing uses accounts of the same name)."
        )
    if entry.pw_uid == 0 or entry.pw_uid == os.geteuid():
        raise AccountUnavailable(f"Servers never run as root or as the hub's own account ({name!r}).", status=403)
    if entry.pw_uid < login_uid_min():
        raise AccountUnavailable(
            f"The Unix account {name!r} is a system account (uid {entry.pw_uid}, below UID_MIN of /etc/login.defs): "
            "servers never run as daemons' accounts.",
            status=403,
        )
    return UnixAccount.from_passwd(entry, _home(entry, username, home_template))


def _home(entry: pwd.struct_passwd, username: str, template: str | None) -> str:
    return template_home(template, username, entry.pw_name) or entry.pw_dir


def ensure_home(account: UnixAccount) -> None:
    """Create the home folder 0700, owned by the account; an existing one must be the account's own folder.

    A home someone else made (or a symlink) in a shared, writable parent such as /scratch would let
    them plant start-up files that run as this account.
    """
    home = Path(account.home)
    if os.path.lexists(home):
        info = home.lstat()
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise AccountUnavailable(f"The home folder {home} is not a plain folder (a symlink or a file).", status=500)
        if info.st_uid != account.uid:
            raise AccountUnavailable(f"The home folder {home} does not belong to {account.name}.", status=500)
        if info.st_mode & 0o022:
            raise AccountUnavailable(f"The home folder {home} is writable by others; make it 0700 or 0755.", status=500)
        return
    home.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    home.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(home, account.uid, account.gid)


def unreachable_folder(path: str | os.PathLike) -> Path | None:
    """The first folder above ``path`` that other accounts cannot search (so cannot run it), or None."""
    for parent in reversed(Path(os.path.realpath(path)).parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None
