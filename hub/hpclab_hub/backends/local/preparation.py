"""What a local server needs before its process starts: its account and home, its disk quota, its cgroup.

Each step fails with a message the user and the admin can act on (the account cannot be made, the
file system has no quotas, the kernel cannot enforce limits), before any process runs.
"""

from __future__ import annotations

import glob
import os

from tornado import web

from hpclab_hub.backends import ServerContext
from hpclab_hub.backends.local.cgroups import (
    NICE_WEIGHT,
    CgroupUnavailable,
    ServerCgroup,
    ServerLimits,
    device_numbers,
    group_name,
)
from hpclab_hub.backends.local.disk_quota import DiskQuotaUnavailable, set_home_quota
from hpclab_hub.backends.local.resources import Allocation, ResourcePool
from hpclab_hub.backends.local.unix_accounts import AccountUnavailable, UnixAccount, ensure_home, resolve_account
from hpclab_hub.config.model import LocalBackend
from hpclab_hub.config.units import format_memory


def prepare_account(ctx: ServerContext, backend: LocalBackend) -> UnixAccount:
    """The user's Unix account (created on first start in mode create) with its home folder ready."""
    accounts = backend.accounts
    try:
        admins = ctx.deployment.hub.admin_users
        account = resolve_account(
            ctx.user_name,
            accounts.mode,
            accounts.prefix,
            accounts.home_base,
            backend.home_dir,
            only_user=admins[0] if admins else None,
        )  # hub-user: the trial's one person
        ensure_home(account)
    except AccountUnavailable as refused:
        ctx.record_failure("account")
        ctx.log.warning("No account for %s: %s", ctx.log_name, refused)
        raise web.HTTPError(refused.status, str(refused)) from None
    except OSError as error:
        ctx.record_failure("account")
        raise web.HTTPError(500, f"Could not prepare the home folder of {ctx.user_name}: {error}") from None
    return account


def set_disk_quota(ctx: ServerContext, account: UnixAccount) -> dict[str, str]:
    """The person's home quota (quotas.disk) set in the kernel; the server's HPCLAB_DISK_* variables."""
    disk = ctx.deployment.quotas.disk
    limit = disk.limit_for(ctx.user_name, ctx.user_groups())
    if limit is None:
        return {}
    if os.geteuid() != 0:
        ctx.log.warning("%s: quotas.disk is not enforced: the hub runs without root", ctx.log_name)
        return {}
    try:
        env = set_home_quota(account.home, account.uid, account.gid, limit)
    except DiskQuotaUnavailable as error:
        ctx.record_failure("disk_quota")
        raise web.HTTPError(
            500,
            f"The home folder's disk quota ({format_memory(limit)}, quotas.disk) cannot be set: {error}. "
            "An admin can remove quotas.disk to run without it.",
        ) from None
    ctx.log.info(
        "%s: home %s limited to %s (%s)",
        ctx.log_name,
        account.home,
        format_memory(limit),
        "btrfs qgroup" if "HPCLAB_DISK_USED_FILE" in env else "user quota",
    )
    return env


def server_limits(ctx: ServerContext, backend: LocalBackend, pool: ResourcePool, allocation: Allocation) -> ServerLimits:
    """The allocation as cgroup limits: cores, memory, processes, and every pool GPU not assigned denied."""
    allowed: set[tuple[int, int]] = set()
    for gpu in allocation.gpu_ids:
        numbers = device_numbers(backend.gpu_device(gpu))
        if numbers is None:
            ctx.log.warning(
                "GPU %s of %s has no device node at %s (backends.*.gpu_devices)", gpu, ctx.log_name, backend.gpu_device(gpu)
            )
        else:
            allowed.add(numbers)
    nodes = {backend.gpu_device(gpu) for gpu in pool.gpu_ids}
    nodes.update(path for path in glob.glob("/dev/nvidia*") if path[len("/dev/nvidia") :].isdigit())  # GPUs outside the pool too
    found = {device_numbers(path) for path in nodes}
    denied = {numbers for numbers in found if numbers is not None} - allowed
    return ServerLimits(
        allocation.cpu_ids,
        ctx.profile.memory,
        backend.pids_limit,
        tuple(sorted(denied)),
        allowed_devices=tuple(sorted(allowed)),
        servers_cpu_shares=NICE_WEIGHT[backend.server_nice],
    )


def uses_cgroups(backend: LocalBackend) -> bool:
    """Whether limits are the kernel's (cgroups) or best effort (affinity and rlimits)."""
    return backend.limits == "cgroups" or (backend.limits == "auto" and os.geteuid() == 0)


def make_cgroup(
    ctx: ServerContext, backend: LocalBackend, pool: ResourcePool, account: UnixAccount, allocation: Allocation
) -> ServerCgroup | None:
    """The server's cgroup with the allocation's limits (None for best effort); leftovers of an earlier server killed."""
    if not uses_cgroups(backend):
        return None
    name = group_name(str(ctx.deployment.hub.data_dir), account.name, ctx.name)
    try:
        group = ServerCgroup.create(name, server_limits(ctx, backend, pool, allocation))
    except CgroupUnavailable as error:
        ctx.record_failure("cgroup")
        raise web.HTTPError(
            500,
            f"This server cannot enforce the profile's limits: {error}. "
            "An admin can set backends.<name>.limits: best-effort to run without kernel-enforced limits.",
        ) from None
    for note in group.notes:
        ctx.log.warning("%s: %s", ctx.log_name, note)
    leftovers = group.kill_all()  # processes of an earlier server of this user the hub lost track of
    if leftovers:
        raise web.HTTPError(500, f"Processes {sorted(leftovers)} of an earlier server would not stop")
    return group
