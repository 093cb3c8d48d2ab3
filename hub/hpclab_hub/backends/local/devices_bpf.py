"""GPU fencing on cgroup v2: a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program attached to a server's cgroup.

cgroup2 has no ``devices.deny`` file. The kernel asks the device programs attached to a task's cgroup
(and to its ancestors, all of which must allow) before every ``open``/``mknod`` of a device node. This
module assembles such a program by hand, eBPF instruction by instruction as Slurm's cgroup/v2 plugin does
in ``ebpf.c`` (and systemd for ``DeviceAllow=``), and loads and attaches it through the ``bpf()`` system
call with ctypes: no clang, no libbpf, no bpftool at run time.

The program decides, for a character device (block devices and everything else are allowed):

1. ``allowed`` nodes (the server's own GPUs): allowed;
2. ``denied`` nodes (every other GPU the hub knows of, wherever its node is): refused (EPERM);
3. NVIDIA's major 195 below minor 254 (``/dev/nvidia<N>``, a GPU that appeared after the server started
   or that the hub's configuration does not name): refused;
4. everything else, the shared control devices included (``/dev/nvidiactl`` 195:255,
   ``/dev/nvidia-modeset`` 195:254, ``/dev/nvidia-uvm`` and ``/dev/nvidia-uvm-tools`` on their own dynamic
   major): allowed.

A program stays attached for as long as the cgroup exists (a restarted hub finds it in place) and goes
away with it. Needs root (CAP_SYS_ADMIN, or CAP_BPF + CAP_NET_ADMIN) and a kernel with
``CONFIG_CGROUP_BPF`` (every distribution kernel).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterable

NVIDIA_MAJOR = 195
#: minors of NVIDIA's major every GPU process needs: nvidia-modeset (254), nvidiactl (255)
NVIDIA_CONTROL_MINORS = (254, 255)

# bpf() commands, program and attach types, flags (include/uapi/linux/bpf.h)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
BPF_DEVCG_DEV_CHAR = 2

_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
_ATTR_SIZE = 128  # larger than every field used here; the kernel accepts a zero tail

# instruction classes and opcodes (include/uapi/linux/bpf_common.h, bpf.h)
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_ALU64_MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_JMP_JA = 0x05
_JMP_JEQ_K = 0x15
_JMP_JNE_K = 0x55
_JMP_JGE_K = 0x35
_JMP_EXIT = 0x95
# registers: r1 holds the context (struct bpf_cgroup_dev_ctx {u32 access_type, major, minor}); r0 the verdict
_R0, _R1, _R2, _R3, _R4 = 0, 1, 2, 3, 4


class DeviceFenceError(Exception):
    """The device program could not be loaded or attached (the message says why)."""


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction: struct bpf_insn {u8 code; u8 dst:4, src:4; s16 off; s32 imm}."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


Device = tuple[int, int]


def assemble(allowed: Iterable[Device], denied: Iterable[Device]) -> bytes:
    """The device program for a server that may open ``allowed`` and must not open ``denied`` (see above)."""
    allowed_set = sorted(set(allowed))
    denied_set = sorted(set(denied) - set(allowed_set))
    body: list[tuple[str, bytes]] = []  # ("insn", instruction) or ("allow"/"deny", the jump without its offset)

    def jump_to(label: str, code: int = _JMP_JA, dst: int = 0, imm: int = 0) -> None:
        body.append((label, struct.pack("<BBi", code, dst, imm)))  # the offset is filled in below

    def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        body.append(("insn", _insn(code, dst, src, off, imm)))

    insn(_LDX_MEM_W, _R2, _R1, 0)  # r2 = access_type
    insn(_ALU32_AND_K, _R2, imm=0xFFFF)  # r2 = device type (BPF_DEVCG_DEV_*)
    insn(_LDX_MEM_W, _R3, _R1, 4)  # r3 = major
    insn(_LDX_MEM_W, _R4, _R1, 8)  # r4 = minor
    jump_to("allow", _JMP_JNE_K, _R2, BPF_DEVCG_DEV_CHAR)  # not a character device: allowed
    for label, devices in (("allow", allowed_set), ("deny", denied_set)):
        for major, minor in devices:
            insn(_JMP_JNE_K, _R3, off=2, imm=major)
            insn(_JMP_JNE_K, _R4, off=1, imm=minor)
            jump_to(label)
    insn(_JMP_JNE_K, _R3, off=2, imm=NVIDIA_MAJOR)  # another /dev/nvidia<N>: refused
    jump_to("allow", _JMP_JGE_K, _R4, min(NVIDIA_CONTROL_MINORS))  # nvidia-modeset, nvidiactl
    jump_to("deny")
    tail = {"allow": len(body), "deny": len(body) + 2}  # allow: r0 = 1; exit.  deny: r0 = 0; exit
    code = b""
    for index, (label, packed) in enumerate(body):
        if label == "insn":
            code += packed
        else:
            op, dst, imm = struct.unpack("<BBi", packed)
            code += _insn(op, dst, 0, tail[label] - index - 1, imm)
    code += _insn(_ALU64_MOV_K, _R0, imm=1) + _insn(_JMP_EXIT)
    code += _insn(_ALU64_MOV_K, _R0, imm=0) + _insn(_JMP_EXIT)
    return code


# --- the bpf() system call -----------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(command: int, attr: ctypes.Array) -> int:
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None:
        raise DeviceFenceError(f"bpf(): unknown system call number on {platform.machine()}")
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_int(command), attr, ctypes.c_uint(len(attr)))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _attr(layout: str, *values: int | bytes) -> ctypes.Array:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(layout, attr, 0, *values)
    return attr


def load(program: bytes, name: str = "hpclab_devices") -> int:
    """Load a device program; returns its file descriptor (the caller closes it)."""
    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    # struct {u32 prog_type, insn_cnt; u64 insns, license; u32 log_level, log_size; u64 log_buf;
    #         u32 kern_version, prog_flags; char prog_name[16]; u32 prog_ifindex, expected_attach_type}
    attr = _attr(
        "<IIQQIIQII16sII",
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(program) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        name.encode()[:15],
        0,
        BPF_CGROUP_DEVICE,
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as error:
        detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise DeviceFenceError(
            f"the kernel refused the device program: {error.strerror}" + (f" ({' / '.join(detail)})" if detail else "")
        ) from None


def attached(cgroup: str) -> list[int]:
    """Ids of the device programs attached to the cgroup directory ``cgroup`` itself."""
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = (ctypes.c_uint32 * 64)()
        # struct {u32 target_fd, attach_type, query_flags, attach_flags; u64 prog_ids; u32 prog_cnt}
        attr = _attr("<IIIIQI", fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), len(ids))
        _bpf(BPF_PROG_QUERY, attr)
        count = struct.unpack_from("<I", attr, 24)[0]
        return list(ids[:count])
    finally:
        os.close(fd)


def _detach(cgroup_fd: int, program_id: int) -> None:
    prog_fd = _bpf(BPF_PROG_GET_FD_BY_ID, _attr("<I", program_id))
    try:
        _bpf(BPF_PROG_DETACH, _attr("<III", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE))
    finally:
        os.close(prog_fd)


def fence(cgroup: str, allowed: Iterable[Device], denied: Iterable[Device]) -> int:
    """Attach a device program to ``cgroup`` (a cgroup2 directory), replacing the ones attached there before.

    The new program is attached before the old ones go, so the group is never without a fence. Returns
    the program's id. Raises DeviceFenceError when the kernel refuses.
    """
    program = assemble(allowed, denied)
    try:
        before = attached(cgroup)
    except OSError as error:
        raise DeviceFenceError(f"cannot query the device programs of {cgroup}: {error.strerror}") from None
    prog_fd = load(program)
    cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # struct {u32 target_fd, attach_bpf_fd, attach_type, attach_flags}; ALLOW_MULTI: programs of the
        # ancestors (systemd's) keep running too, and all of them must allow
        try:
            _bpf(BPF_PROG_ATTACH, _attr("<IIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI))
        except OSError as error:
            raise DeviceFenceError(f"cannot attach the device program to {cgroup}: {error.strerror}") from None
        for program_id in before:
            try:
                _detach(cgroup_fd, program_id)
            except OSError as error:
                if error.errno not in (errno.ENOENT, errno.ESRCH):
                    raise DeviceFenceError(f"cannot detach the earlier device program {program_id}: {error.strerror}") from None
        now = attached(cgroup)
    finally:
        os.close(cgroup_fd)
        os.close(prog_fd)
    new = [i for i in now if i not in before]
    if len(new) != 1:
        raise DeviceFenceError(f"device programs on {cgroup} after attaching: {now} (before: {before})")
    return new[0]
