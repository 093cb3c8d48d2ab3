"""A local server's environment and private mounts: what it sees of the hub's machine.

Nothing of the hub's own environment passes but what JupyterHub and the YAML name; its /tmp, /dev/shm
and /proc are its own, with the folders the deployment needs kept in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hpclab_hub.backends import ServerContext
from hpclab_hub.backends.local.preexec import admin_named_paths
from hpclab_hub.backends.local.resources import Allocation, ResourcePool
from hpclab_hub.backends.local.server_namespace import PrivateMounts
from hpclab_hub.backends.local.unix_accounts import UnixAccount
from hpclab_hub.config.model import LocalBackend

#: What the server's PATH holds besides the hub's own bin folder (the hub's PATH is not passed on).
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def admin_environment(ctx: ServerContext, profile_env: dict[str, str]) -> dict[str, str]:
    """The variables the YAML gives this server (backend, profile, the profile's local part): the admin's, never a user's."""
    env = dict(profile_env)
    local = ctx.profile.local
    if local:
        env.update(local.environment)
    return env


def server_environment(
    ctx: ServerContext,
    account: UnixAccount | None,
    allocation: Allocation,
    disk_env: dict[str, str],
    hub_env: dict[str, str],
    profile_env: dict[str, str],
) -> dict[str, str]:
    """The hub's few kept variables, the account's, the profile's, the allocation's: nothing else of the hub's."""
    env = dict(hub_env)
    env["USER"] = env["LOGNAME"] = account.name if account else ctx.user_name
    env["HOME"] = account.home if account else ""
    env["SHELL"] = "/bin/bash"
    env["PATH"] = f"{Path(sys.executable).parent}:{SYSTEM_PATH}"  # the hub's venv: jupyterhub-singleuser, hpclab-kernel
    env.update(admin_environment(ctx, profile_env))
    env["CUDA_VISIBLE_DEVICES"] = ",".join(allocation.gpu_ids)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as nvidia-smi does
    if ctx.job_end_epoch:
        env["HPCLAB_JOB_END_TIME"] = str(int(ctx.job_end_epoch))
    env.update(disk_env)
    return env


def private_mounts(
    ctx: ServerContext, backend: LocalBackend, account: UnixAccount | None, pool: ResourcePool, profile_env: dict[str, str]
) -> PrivateMounts | None:
    """The server's private /tmp, /dev/shm and /proc (backends.*.private_tmp), with the folders it needs kept in."""
    if not backend.private_tmp or os.geteuid() != 0 or account is None:
        return None
    # what the deployment put under /tmp stays as the host has it (test hubs do): the folder of the homes (others'
    # stay 0700, not hidden), the hub's state (0700), its Python and source, examples, GPU nodes, kernels
    deployment = ctx.deployment
    keep = [
        account.home,
        str(Path(account.home).parent),
        str(deployment.hub.data_dir),
        sys.prefix,
        sys.base_prefix,
        str(Path(sys.executable).resolve().parent),
        str(Path(__file__).resolve().parents[4]),
        str(deployment.examples.source_dir),
    ]
    keep += [str(Path(backend.gpu_device(gpu)).parent) for gpu in pool.gpu_ids]
    for kernel in deployment.kernels.values():
        if kernel.runtime is not None:
            keep += [str(path) for path in (kernel.runtime.prefix, kernel.runtime.image and kernel.runtime.image.parent) if path]
    keep += admin_named_paths(admin_environment(ctx, profile_env))
    return PrivateMounts(size=ctx.profile.memory, hide_processes=backend.hide_processes, keep=tuple(keep))
