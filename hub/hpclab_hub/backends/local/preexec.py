"""What runs in a local server's child process before exec: its cgroup, priority, private mounts, account and home.

Also the two facts the local backend reads about processes and paths: when a pid started (a
re-adopted pid must still be its server after a reboot) and which folders the admin's variables
name (a private /tmp must not hide them).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path

from hpclab_hub.backends.local.cgroups import ServerCgroup
from hpclab_hub.backends.local.server_namespace import PrivateMounts
from hpclab_hub.backends.local.unix_accounts import UnixAccount


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def admin_named_paths(env: dict[str, str]) -> list[str]:
    """Existing folders an admin's variables name (JUPYTER_PATH=/srv/kernels:…, SSL_CERT_FILE=/etc/…/ca.pem → its
    folder): a server's private /tmp must not hide what the YAML points it at."""
    found = []
    for value in env.values():
        for part in value.split(os.pathsep):
            path = Path(part)
            if path.is_absolute() and path.exists():
                found.append(str(path if path.is_dir() else path.parent))
    return found


def server_preexec(
    account: UnixAccount,
    cgroup: ServerCgroup | None,
    cpu_ids: tuple[int, ...],
    memory: int | None,
    nice: int = 0,
    mounts: PrivateMounts | None = None,
) -> Callable[[], None]:
    """The function run in the child before exec: join the cgroup, lower its CPU priority by ``nice``, enter a mount
    namespace with a private /tmp, /dev/shm and /proc (``mounts``, as root), drop to the account, enter its home.

    Without a cgroup (``limits: best-effort``) cores are pinned with affinity and memory is an
    RLIMIT_DATA per process, which a user can work around; the cgroup is what the kernel enforces.
    """
    switch = os.geteuid() == 0 and account.uid != os.geteuid()

    def preexec() -> None:
        if cgroup is not None:
            cgroup.attach()
        else:
            os.sched_setaffinity(0, cpu_ids)
            if memory:
                resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        if nice:  # before dropping to the account, which may not lower it again (RLIMIT_NICE)
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), nice))
        if mounts is not None and switch:
            try:
                mounts.enter()
            except OSError as error:  # the hub only learns 'Exception occurred in preexec_fn': the reason goes to its log
                os.write(
                    2,
                    f"hpclab: cannot make the server's private /tmp and /dev/shm: {error} "
                    "(backends.<name>.private_tmp: false turns them off)\n".encode(),
                )
                raise
        os.umask(0o077)  # what the server creates is its account's alone (a group-shared folder can set its own mode)
        if switch:
            os.setgroups(list(account.groups))
            os.setgid(account.gid)
            os.setuid(account.uid)
            if os.getuid() == 0 or os.geteuid() == 0:  # never exec a user's server with root left over
                raise PermissionError("the server would still run as root")
        os.chdir(account.home)

    return preexec
