"""What a valid YAML leaves off on this host (no firewall, no quotas, a shared origin): said, never errors.

``hpclab-hub check`` prints these notes and the hub logs them at start. They ask the host, so they live
above the YAML model (config/) and the backends whose features they look for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hpclab.apps import APPS, missing_programs
from hpclab.lab_features import LAB_FEATURES
from hpclab_hub.backends.local.disk_quota import quota_problem
from hpclab_hub.backends.local.one_door import door_note
from hpclab_hub.backends.local.trial import trial_user
from hpclab_hub.config.model import Deployment


def deployment_notes(deployment: Deployment) -> list[str]:
    """What a valid YAML leaves off on this machine, said by ``hpclab-hub check`` and logged by the hub (never errors)."""
    multi_user = trial_user(deployment) is None
    door = door_note(multi_user=multi_user)
    notes = (
        deployment.examples.off_note,
        door,
        _shared_origin_note(deployment, multi_user),
        *_disk_quota_notes(deployment),
        *_lab_feature_notes(deployment),
    )
    return [note for note in notes if note]


def app_warnings(deployment: Deployment) -> list[str]:
    """Apps a profile offers whose program is not installed (code-server, the desktop's TigerVNC and xfce4): their
    tiles would fail. Warned by ``hpclab-hub check`` and in the hub's log; never an error (it may be installed later).

    Looked for on this machine: a local backend's servers run here; a SLURM backend's run on the nodes, whose software
    is the node prefix (code-server under it) and the nodes' own system packages, which the login side often mirrors.
    """
    notes = []
    for profile in deployment.profiles:
        backend = deployment.backends[profile.backend]
        prefix = getattr(backend, "node_prefix", None) or sys.prefix
        code_server = Path(
            profile.environment.get("HPCLAB_CODE_SERVER_DIR")
            or os.environ.get("HPCLAB_CODE_SERVER_DIR")
            or Path(prefix, "code-server")
        )
        where = "on this machine" if backend.type == "local" else "on this machine, and the nodes run it the same way"
        for name in profile.apps:
            missing = missing_programs(name, code_server)
            if missing:
                install = "make code-server" if name == "vscode" else "make system-packages"
                notes.append(
                    f"profile {profile.slug!r} offers the {name} app ({APPS[name][0]}), but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not installed {where}: its tile would fail ({install}; "
                    "docs/kernels.md)"
                )
    return notes


def _disk_quota_notes(deployment: Deployment) -> list[str]:
    """quotas.disk set, but the file system of a local backend's homes cannot hold a quota: its servers will not start."""
    if not deployment.quotas.disk.configured:
        return []
    notes = []
    for name, backend in deployment.backends.items():
        if backend.type != "local":
            continue
        homes = Path(backend.home_dir.split("{", 1)[0]) if backend.home_dir else backend.accounts.home_base
        while not homes.exists() and homes != homes.parent:  # homes made later: their nearest existing folder
            homes = homes.parent
        problem = quota_problem(homes)
        if problem:
            notes.append(
                f"quotas.disk is set, but homes of backend {name!r} ({homes}) cannot hold a quota: {problem}. "
                "Servers of users with a disk quota will not start until the file system has quotas on."
            )
    return notes


def _shared_origin_note(deployment: Deployment, multi_user: bool) -> str:
    """What a multi-user hub exposes when users' servers share the hub's origin (hub.user_subdomains off)."""
    if deployment.hub.user_subdomains or not multi_user:
        return ""
    return (
        "hub.user_subdomains is off: every user's server is served on the hub's own origin, so a page from one user's "
        "server (which she controls completely) acts as whoever opens it: it can read the hub's pages and make API "
        "tokens in the visitor's name, an admin's included. Turn it on, with wildcard DNS (*.<public_host>) and a "
        'wildcard certificate (docs/admin-guide.md, "A host name per user").'
    )


def _lab_feature_notes(deployment: Deployment) -> list[str]:
    """Lab features a profile of a local backend asks for that this machine cannot serve (GPU dashboards, no driver)."""
    notes = []
    for profile in deployment.profiles:
        if deployment.backends[profile.backend].type != "local":
            continue  # its servers run elsewhere: each server checks for itself (hpclab.lab_features)
        for name in profile.lab_features:
            check = LAB_FEATURES[name].unavailable
            why = check() if check is not None else ""
            if why:
                notes.append(f"profile {profile.slug!r} asks for the {name} lab feature, but {why}")
    return notes
