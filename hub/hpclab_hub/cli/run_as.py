"""``hpclab-hub run --user NAME``: a hub started as root (a systemd unit) that runs as an unprivileged account.

Only where nothing in the YAML needs root: SLURM backends through the submit wrapper (the same refusals as a hub
started as that account, backends/without_root.py), no local backend (it creates accounts and cgroups and drops to
each user). Everything is checked as root before anything changes; then ``hub.data_dir`` is given to the account and
the process drops its supplementary groups, gid and uid for good, before JupyterHub binds or opens anything.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpclab_hub.backends.without_root import without_root_refusals
from hpclab_hub.config import Deployment
from hpclab_hub.ops.shown_environ import dumpable_again


def run_as_refusals(deployment: Deployment, name: str, port: int, config: str) -> list[str]:
    """Why this hub cannot start as root and run as ``name`` ([] where it can); nothing is changed here."""
    if os.geteuid() != 0:
        return [f"--user {name} needs the hub started as root (it switches to that account); start it as {name} instead"]
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return [f"--user {name}: no such account (useradd --system --home-dir /var/lib/hpclab hpclab makes one)"]
    if account.pw_uid == 0:
        return [f"--user {name} is root itself; leave --user out to run as root"]
    found = [
        f"--user {name}: backends.{backend} is a local backend, which needs a hub running as root (it creates the "
        "users' accounts and cgroups and starts each server as its user); leave --user out"
        for backend, settings in deployment.backends.items()
        if settings.type == "local"
    ]
    found += [f"--user {name}: {refusal}" for refusal in without_root_refusals(deployment, euid=account.pw_uid)]
    lowest = _unprivileged_port_start()
    if port < lowest and not os.environ.get("LISTEN_FDS"):
        found.append(
            f"--user {name}: the hub's port {port} is below {lowest}, which only root may bind, and the hub binds it "
            "after dropping root; use a port from 1024 (nginx in front: deploy/nginx/hpclab.conf) or let systemd hold "
            "the socket (deploy/systemd/hpclab-hub.socket)"
        )
    data_dir = deployment.hub.data_dir.resolve()
    if len(data_dir.parts) < 3:
        found.append(f"--user {name}: hub.data_dir {data_dir} is too near / to be handed to {name} as a whole")
    hub = deployment.hub
    with _as_account(account):
        for what, path in (("the YAML", Path(config)), ("hub.ssl_cert", hub.ssl_cert), ("hub.ssl_key", hub.ssl_key)):
            if path is not None and not os.access(path, os.R_OK, effective_ids=True):
                found.append(f"--user {name} cannot read {what} ({path}); give it read access (group or ACL)")
        for above in data_dir.parents:
            if above.exists() and not os.access(above, os.X_OK, effective_ids=True):
                found.append(f"--user {name} cannot reach hub.data_dir {data_dir}: {above} is closed to it")
                break
    return found


def drop_to(name: str, data_dir: Path, env: dict[str, str]) -> None:
    """Give ``data_dir`` (and all in it) to ``name``, then become ``name`` for good: groups, gid, uid; ``env`` its HOME."""
    account = pwd.getpwnam(name)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder, folders, files in os.walk(data_dir):  # never follows links: a link's target stays whose it was
        for entry in [folder, *(os.path.join(folder, f) for f in folders + files)]:
            os.lchown(entry, account.pw_uid, account.pw_gid)
    data_dir.chmod(0o700)
    os.initgroups(name, account.pw_gid)  # root's supplementary groups go; the account's own come
    os.setresgid(account.pw_gid, account.pw_gid, account.pw_gid)
    os.setresuid(account.pw_uid, account.pw_uid, account.pw_uid)
    if os.getresuid() != (account.pw_uid,) * 3 or os.getresgid() != (account.pw_gid,) * 3 or 0 in os.getgroups():
        raise SystemExit(f"hpclab-hub: could not drop to {name}; not starting")
    dumpable_again()  # the hub runs on in this process (no exec): `hpclab-hub reload` as its account reads its /proc
    env.update(HOME=account.pw_dir, USER=name, LOGNAME=name)
    os.environ.update(HOME=account.pw_dir, USER=name, LOGNAME=name)


@contextmanager
def _as_account(account: pwd.struct_passwd) -> Iterator[None]:
    """Root acting as ``account`` for access checks (effective ids and groups only), root again afterwards."""
    groups = os.getgroups()
    os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
    os.setegid(account.pw_gid)
    os.seteuid(account.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _unprivileged_port_start() -> int:
    """The lowest port an account without CAP_NET_BIND_SERVICE may bind (the kernel's setting; 1024 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024
