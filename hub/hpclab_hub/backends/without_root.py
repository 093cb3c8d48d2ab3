"""What a hub can do as root but not without it: refused when the hub starts, with what to change, never half-done.

A hub that is not root submits SLURM jobs as each person only through the root-owned submit wrapper that sudoers
allows narrowly (``backends.<name>.submit_wrapper``, docs/slurm.md "A hub that is not root"); the default
``sudo -E -u <person> env PATH=… sbatch`` would need a sudo rule for ``env``, that is for any command. A local
backend's cgroup limits and home quotas need root too. (One local server as the hub's own account, the trial,
is a mode of its own: backends/local/trial.py.)
"""

from __future__ import annotations

import os

from hpclab_hub.config.model import Deployment


def without_root_refusals(deployment: Deployment, euid: int | None = None) -> list[str]:
    """Why this YAML cannot run as a hub without root ([] as root, or when nothing in it needs root)."""
    if (os.geteuid() if euid is None else euid) == 0:
        return []
    found = []
    for name, backend in deployment.backends.items():
        if backend.type == "slurm":
            prefix = backend.submit_prefix
            if not backend.submit_wrapper and (prefix is None or (prefix and os.path.basename(prefix[0]) == "sudo")):
                found.append(
                    f"backends.{name}: this hub is not root, and it would run sbatch as each person through "
                    "`sudo -E -u <person> env PATH=… sbatch`, which sudoers can only allow by allowing any command. Install "
                    "the submit wrapper (deploy/libexec/hpclab-submit as /usr/local/libexec/hpclab-submit, "
                    "deploy/sudoers/hpclab as /etc/sudoers.d/hpclab) and set backends."
                    f'{name}.submit_wrapper: /usr/local/libexec/hpclab-submit (docs/slurm.md, "A hub that is not root")'
                )
        elif backend.type == "local" and backend.limits == "cgroups":
            found.append(
                f"backends.{name}.limits is cgroups, which needs a hub running as root (it makes a cgroup per server); "
                "use limits: auto or best-effort, or run the hub as root"
            )
    local = [name for name, backend in deployment.backends.items() if backend.type == "local"]
    disk = deployment.quotas.disk
    if local and (disk.per_user or disk.groups or disk.users):
        found.append(
            f"quotas.disk sets home quotas on backends.{local[0]}, which the kernel takes only from root; remove "
            "quotas.disk or run the hub as root"
        )
    if deployment.hub.internal_ssl:
        found.append(
            "hub.internal_ssl gives each person their server's certificate and key in their own home, which only root "
            "can hand over; turn internal_ssl off or run the hub as root"
        )
    return found
