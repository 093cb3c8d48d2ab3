"""What a SLURM server shows beyond its start and stop: its job and node (the admins' page, from the hub's shared queue
snapshot), what it uses (one sstat for all running jobs, job_use.py), the nodes internal_ssl's certificates name."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from hpclab_hub.backends import ServerUse, Whereabouts
from hpclab_hub.backends.slurm.job_use import uses_for


async def slurm_whereabouts(server: Any, starting: bool) -> Whereabouts:
    """Its job id, the node SLURM's queue names for it, and SLURM's words while it starts."""
    node = ""
    if server.job_id:
        status = await server.queue.status(server.job_id)
        node = status.info.node if status.info is not None else ""
    return Whereabouts(server.job_id, node, "", server.progress_line if starting else "")


async def slurm_uses(servers: list[Any]) -> list[ServerUse]:
    """The running jobs' use: one sstat per SLURM configuration for all of them; SLURM's refusal or silence in words."""
    uses = [ServerUse() for _ in servers]
    views: dict[int, tuple[Any, list[int]]] = {}
    for i, server in enumerate(servers):
        if server.job_id:
            view = uses_for(server.client, server.backend.poll_interval)
            views.setdefault(id(view), (view, []))[1].append(i)
    for view, members in views.values():
        found = await view.uses({servers[i].job_id for i in members})
        for i in members:
            job = servers[i].job_id
            use = found.get(job)
            if use is not None and (use.memory or use.cpu_seconds):
                uses[i] = ServerUse(use.cpu_seconds, use.memory, use.peak_memory, use.measured_at)
                continue
            error = view.error(job)
            missing = "SLURM reports no use for this job (is JobAcctGatherType jobacct_gather/none?)"
            uses[i] = ServerUse(note=f"sstat: {error}" if error else missing)
    return uses


def alt_name(host: str) -> str:
    """A subjectAltName for a host: ``IP:10.0.0.12`` for an address, ``DNS:node12`` for a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def node_alt_names(scontrol_nodes: str) -> list[str]:
    """Every node's name and address from ``scontrol show node -o`` (one node a line) as subjectAltNames: JupyterHub
    makes a server's certificate before SLURM has picked its node, so it names them all."""
    names: list[str] = []
    for line in scontrol_nodes.splitlines():
        for key in ("NodeName", "NodeAddr", "NodeHostName"):
            match = re.search(rf"(?:^|\s){key}=(\S+)", line)
            if match and match.group(1) != "(null)" and alt_name(match.group(1)) not in names:
                names.append(alt_name(match.group(1)))
    return names
