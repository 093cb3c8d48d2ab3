"""What each profile on the form can get right now, each from its own backend (``ServerBackend.availability``: one
answer per backend for all its profiles, so SLURM is asked once per cluster).

A profile that can never start here (a GPU profile on a server without GPUs, a partition that is
down or missing) is shown disabled with the reason, and refused if a forged form asks for it: the
start checks the same rule (``ServerBackend.refusals``).
"""

from __future__ import annotations

from collections.abc import Callable

from hpclab_hub.backends import Availability, ServerBackend
from hpclab_hub.config.model import Deployment


async def form_availability(deployment: Deployment, backend_for: Callable[[str], ServerBackend]) -> dict[str, Availability]:
    """Availability of every profile, asked of a backend object (``backend_for(name)``) for each backend with profiles."""
    result: dict[str, Availability] = {}
    for name in deployment.backends:
        profiles = [p for p in deployment.profiles if p.backend == name]
        if profiles:
            result.update(await backend_for(name).availability(profiles))
    return result
