"""Make ``/proc/<pid>/environ`` show the environment a process now runs with, not the one it was started with.

The kernel shows in ``/proc/<pid>/environ`` the block of memory the process got at ``exec``; changes made since
(``os.environ``) are not shown. Two processes here change their whole environment without an ``exec``:
``hpclab-hub run``, which starts JupyterHub in its own process after its checks (a second interpreter would import
JupyterHub again: that much longer a pause on every restart), and a zygote's child, which becomes a user's server.
Each then points the kernel at a block holding its new environment (``prctl(PR_SET_MM_MAP)`` with every other field
as it is, which needs no privilege), so that ``ps e``, ``hpclab-hub reload`` (which reads the hub's YAML path there)
and an admin see what the process really uses, and a variable taken out (the admins' password) is no longer shown.
Where the kernel refuses (built without CONFIG_CHECKPOINT_RESTORE, or the process has threads) the caller ``exec``s
instead, or keeps the old view and says so.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path

PR_SET_DUMPABLE = 4
PR_SET_MM = 35
PR_SET_MM_MAP = 14

#: the blocks shown: referenced for the process's whole life (the kernel reads them on every look)
_SHOWN: list[ctypes.Array[ctypes.c_char]] = []


class MemoryMap(ctypes.Structure):
    """``struct prctl_mm_map`` of <linux/prctl.h>: the addresses ``PR_SET_MM_MAP`` sets all at once."""

    _fields_ = [
        *(
            (name, ctypes.c_uint64)
            for name in (
                "start_code",
                "end_code",
                "start_data",
                "end_data",
                "start_brk",
                "brk",
                "start_stack",
                "arg_start",
                "arg_end",
                "env_start",
                "env_end",
                "auxv",
            )
        ),
        ("auxv_size", ctypes.c_uint32),
        ("exe_fd", ctypes.c_uint32),
    ]


def environ_block(environment: Mapping[str, str]) -> bytes:
    """``NAME=value\\0`` for each variable, as the kernel lays out an environment at ``exec``."""
    return b"".join(os.fsencode(f"{name}={value}") + b"\0" for name, value in environment.items())


def dumpable_again() -> None:
    """What an ``exec`` would do after a change of account: the process dumpable again, so that its /proc files are
    its account's (its own kernels, ``hpclab-hub reload`` as the hub's account, and :func:`show_environ`'s check read
    them), not root's alone. Both callers changed account in this process and hold nothing of anyone else's."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def _single_threaded() -> bool:
    return len(os.listdir("/proc/self/task")) == 1


def show_environ(environment: Mapping[str, str]) -> bool:
    """Point ``/proc/self/environ`` at ``environment``; True once it shows exactly that, False where refused.

    Only in a process with one thread: the program break passed back must be the current one (a ``malloc`` in
    another thread could move it between reading and setting)."""
    if not _single_threaded():
        return False
    data = environ_block(environment) or b"\0"  # an empty range reads as nothing; one NUL as an empty environment
    block = ctypes.create_string_buffer(data, len(data))
    start = ctypes.addressof(block)
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()

    def field(number: int) -> int:  # proc(5) numbers them from 1; the first after the name is field 3
        return int(fields[number - 3])

    libc = ctypes.CDLL(None, use_errno=True)
    libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_long]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    wanted = MemoryMap(
        start_code=field(26),
        end_code=field(27),
        start_data=field(45),
        end_data=field(46),
        start_brk=field(47),
        brk=libc.sbrk(0) or 0,
        start_stack=field(28),
        arg_start=field(48),
        arg_end=field(49),
        env_start=start,
        env_end=start + len(data),
        auxv=0,
        auxv_size=0,
        exe_fd=0xFFFFFFFF,  # -1: the same program
    )
    if libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.addressof(wanted), ctypes.sizeof(wanted), 0) != 0:
        return False
    _SHOWN.append(block)
    try:
        return Path("/proc/self/environ").read_bytes() == data
    except OSError:  # not dumpable (a change of account without exec): not even this process may read it
        return False
