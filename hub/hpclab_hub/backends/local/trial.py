"""A hub without root is a one-person trial (``accounts.mode: hub-user``, or ``auto`` without root).

Without root the hub cannot switch Unix accounts, so the only account it can run a server as is its own.
Then one hub user, the first of ``hub.admin_users`` (the ``admin`` that ``make hub`` creates), gets servers
as the hub's account, in ``~/hpclab-trial``, with the limits a process without root can set on its
children; every other login and sign-up is refused with the reason. ``hpclab-hub run`` says which mode it
is in. See docs/admin-guide.md, "A trial without root".
"""

from __future__ import annotations

import os
import pwd

from hpclab_hub.config.model import Deployment, LocalBackend

#: The trial's working folder (HOME and JupyterLab's root) under the hub account's home, unless home_dir says otherwise.
TRIAL_FOLDER = "hpclab-trial"

#: What a process without root still sets on its children (best-effort limits), and what needs root (cgroups).
APPLIED = "cores as CPU affinity, memory per process (RLIMIT_DATA), CPU priority (nice {nice}), GPUs by CUDA_VISIBLE_DEVICES"
NOT_ENFORCED = (
    "memory of all a server's processes together, the process limit (pids_limit), GPU device isolation "
    "(other GPUs' device nodes stay open), stopping every process a server started (only the server is stopped)"
)


def is_root() -> bool:
    return os.geteuid() == 0


def hub_account_name() -> str:
    """The Unix account the hub runs as."""
    return pwd.getpwuid(os.geteuid()).pw_name


def effective_mode(mode: str) -> str:
    """``auto`` as it applies to this process: ``create`` with root, ``hub-user`` without."""
    if mode != "auto":
        return mode
    return "create" if is_root() else "hub-user"


def trial_backends(deployment: Deployment) -> list[str]:
    """Names of the local backends that run servers as the hub's own account (hub-user, or auto without root)."""
    return [
        name for name, b in deployment.backends.items() if b.type == "local" and effective_mode(b.accounts.mode) == "hub-user"
    ]


def trial_user(deployment: Deployment) -> str | None:
    """The one hub user a trial serves: the first admin, when every backend runs servers as the hub's account.

    None otherwise: on a hub with a SLURM backend too, others may still log in and use it (their local
    starts are refused with the reason).
    """
    if not deployment.hub.admin_users or len(trial_backends(deployment)) != len(deployment.backends):
        return None
    return deployment.hub.admin_users[0]


def trial_refusal(only: str) -> str:
    """Why anyone but ``only`` is refused: said on the login and sign-up pages and at a start."""
    return (
        f"This HPCLab hub is a one-person trial: it runs without root (as the Unix account {hub_account_name()!r}), "
        f"so it can start servers only as that account, and only for {only!r}. For several people, the hub's "
        "owner runs it as root: then each person gets their own Unix account."
    )


def template_home(template: str | None, username: str, account: str) -> str | None:
    """``backends.*.home_dir`` filled in, or None when it is not set."""
    return template.format(username=username, account=account) if template else None


def trial_home(backend: LocalBackend, username: str) -> str:
    """The trial's working folder: ``home_dir`` when set, else ``<home of the hub's account>/hpclab-trial``."""
    me = pwd.getpwuid(os.geteuid())
    return template_home(backend.home_dir, username, me.pw_name) or os.path.join(me.pw_dir, TRIAL_FOLDER)


def start_lines(deployment: Deployment) -> list[str]:
    """What ``hpclab-hub run`` says at start: the mode, the limits that apply, and what root would add."""
    local = {name: b for name, b in deployment.backends.items() if b.type == "local"}
    if not local:
        return []
    trial = trial_backends(deployment)
    me = hub_account_name()
    if not trial:
        if is_root():
            cgroups = [name for name, b in local.items() if b.limits != "best-effort"]
            return [
                f"mode: several people (the hub runs as root): each person's server runs as their own Unix account "
                f"({', '.join(sorted({_account_form(b) for b in local.values()}))}), "
                + ("limits enforced by a cgroup per server." if cgroups else "limits best effort (limits: best-effort).")
            ]
        modes = "/".join(sorted({b.accounts.mode for b in local.values()}))
        return [
            (
                f"warning: this hub runs without root (as {me!r}), so local servers start only for the hub user named "
                f"{me!r} (accounts.mode {modes}). For a one-person trial, set backends.<name>.accounts.mode: auto "
                "(as deploy/hub.yaml does), or run the hub as root."
            )
        ]
    only = deployment.hub.admin_users[0] if deployment.hub.admin_users else "(nobody: hub.admin_users is empty)"
    folder = trial_home(local[trial[0]], only)
    nice = local[trial[0]].server_nice
    others = (
        "every other login and sign-up is refused with the reason"
        if trial_user(deployment)
        else "others may use only the other backends"
    )
    return [
        f"mode: one-person trial (no root; the hub runs as {me!r}): {only!r} logs in, "
        f"servers run as {me!r} in {folder}; {others}.",
        f"  limits applied without root: {APPLIED.format(nice=nice)}.",
        f"  not enforced without root: {NOT_ENFORCED}.",
        (
            "  as root (several people): anyone approved logs in, each server runs as its person's own Unix account "
            "(jupyter-<name>, home 0700) inside a cgroup that enforces all of the above. See docs/admin-guide.md, "
            '"A trial without root".'
        ),
    ]


def _account_form(backend: LocalBackend) -> str:
    return "<name>" if effective_mode(backend.accounts.mode) == "existing" else f"{backend.accounts.prefix}<name>"
