"""What each profile on the form can get right now, each from its own backend (SLURM asked once per backend).

A profile that can never start here (a GPU profile on a server without GPUs, a partition that is
down or missing) is shown disabled with the reason, and refused if a forged form asks for it: the
start checks the same rule (``ServerBackend.refusals``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hpclab_hub.backends import Availability
from hpclab_hub.backends.local.availability import local_availability
from hpclab_hub.backends.local.resources import ResourcePool
from hpclab_hub.backends.slurm.availability import ClusterState, slurm_profile_availability
from hpclab_hub.config.model import Deployment, Profile


async def form_availability(
    deployment: Deployment,
    pool_of: Callable[[Profile], ResourcePool],
    cluster_state: Callable[[str], Awaitable[ClusterState | str]],
) -> dict[str, Availability]:
    """Availability of every profile: local ones from their pool, SLURM ones from one cluster answer per backend."""
    result: dict[str, Availability] = {}
    cluster_answers: dict[str, ClusterState | str] = {}
    for profile in deployment.profiles:
        backend = deployment.backends[profile.backend]
        if backend.type == "local":
            result[profile.slug] = local_availability(profile, pool_of(profile))
            continue
        if profile.backend not in cluster_answers:
            cluster_answers[profile.backend] = await cluster_state(profile.backend)
        result[profile.slug] = slurm_profile_availability(profile, backend, cluster_answers[profile.backend])
    return result
