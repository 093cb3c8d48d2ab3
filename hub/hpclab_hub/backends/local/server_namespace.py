"""A private /tmp, /var/tmp, /dev/shm, System V IPC and /proc for one local server (as systemd's PrivateTmp and PrivateIPC).

Run in the server's child as root, after it joined its cgroup and before it drops to the user's account:

- ``unshare(CLONE_NEWNS | CLONE_NEWIPC)``, then every mount below ``/`` becomes a slave: the host's mounts still
  reach the server, the server's own never reach the host;
- an IPC namespace of its own: System V shared memory, semaphores and message queues and POSIX message queues
  (a fresh mqueue on ``/dev/mqueue`` where the host mounts one) are the server's alone, and the kernel frees them
  when its last process ends: a segment left behind (``shm_rmid_forced`` is 0) cannot outlive the server;
- a fresh tmpfs on ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (mode 1777, nosuid, nodev), each at most the server's memory
  limit. The kernel charges tmpfs pages to the memory cgroup of the process that writes them, so what a
  user keeps there counts against the server's limit; the mounts live as long as a process of the
  namespace does, and stopping the server kills them all: nothing stays behind;
- a /proc of its own with ``hidepid=invisible`` (Linux 5.8 and later: each proc mount has its own
  options): the server's processes see only their own account's processes, not other users' command lines.

/var/tmp, which survives reboots on the host, is a tmpfs here too: what a server keeps there is charged to it and
gone when it stops, like /tmp (systemd's PrivateTmp also gives each service its own /var/tmp, removed at its stop).

Folders the server needs that lie under /tmp, /var/tmp or /dev/shm (a home, the hub's Python, a kernel's prefix —
test hubs keep them there) are bind-mounted back to the same path inside the private tmpfs.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19

#: The folders that become private; anything the server needs below them is bound back in.
PRIVATE_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")

_libc = ctypes.CDLL(None, use_errno=True)  # loaded in the hub, before any fork


class NamespaceUnavailable(OSError):
    """The private mounts could not be made (no CAP_SYS_ADMIN, a kernel without mount namespaces)."""


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    encoded = [None if value is None else value.encode() for value in (source, target, fstype, data)]
    if _libc.mount(encoded[0], encoded[1], encoded[2], ctypes.c_ulong(flags), encoded[3]) != 0:
        code = ctypes.get_errno()
        raise NamespaceUnavailable(code, f"mount {fstype or 'bind'} on {target}: {os.strerror(code)}")


@dataclass(frozen=True)
class PrivateMounts:
    """What one server's namespace gets: tmpfs sizes and the paths to keep visible."""

    size: int | None = None  # bytes per tmpfs (the server's memory limit); None = the kernel's default (half the RAM)
    hide_processes: bool = True
    keep: tuple[str, ...] = ()  # folders the server needs; those under a private folder are bound back in

    def kept_inside(self) -> list[str]:
        """The real paths of ``keep`` that lie under a private folder, without those inside another one."""
        inside = sorted({os.path.realpath(path) for path in self.keep if path and os.path.isdir(path)})
        inside = [p for p in inside if any(p == f or p.startswith(f + "/") for f in PRIVATE_FOLDERS) and p not in PRIVATE_FOLDERS]
        return [p for i, p in enumerate(inside) if not any(p.startswith(q + "/") for q in inside[:i])]

    def enter(self) -> None:
        """Make the namespace and its mounts (in the child, as root). Raises NamespaceUnavailable."""
        kept = self.kept_inside()
        if _libc.unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0:
            code = ctypes.get_errno()
            raise NamespaceUnavailable(code, f"unshare(CLONE_NEWNS | CLONE_NEWIPC): {os.strerror(code)}")
        _mount(None, "/", None, MS_REC | MS_SLAVE, None)
        # opened in the new namespace (a bind must come from a mount of its own namespace), before the tmpfs hides them
        handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in kept}
        try:
            options = "mode=1777" + (f",size={self.size}" if self.size else "")
            for folder in PRIVATE_FOLDERS:
                if os.path.isdir(folder):
                    _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, options)
            if os.path.ismount("/dev/mqueue"):  # the host's queues' names: this namespace's own instead
                _mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
            for path, handle in handles.items():
                _make_path(path)
                _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC, None)
        finally:
            for handle in handles.values():
                os.close(handle)
        if self.hide_processes:
            self._hide_processes()

    @staticmethod
    def _hide_processes() -> None:
        """A /proc of its own showing only the account's own processes; where the kernel refuses, /proc stays."""
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
        except NamespaceUnavailable as error:
            if error.errno not in (errno.EINVAL, errno.EPERM):
                raise
            os.write(2, f"hpclab: other users' processes stay visible: {error.strerror} (hidepid needs Linux 5.8)\n".encode())


def _make_path(path: str) -> None:
    """Create ``path`` and its missing parents in the private tmpfs: root's folders, 0755, the way to a kept folder."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder)
        os.chmod(folder, 0o755)  # not the hub's umask (077): the account must pass through
