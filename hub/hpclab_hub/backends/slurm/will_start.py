"""Whether SLURM would ever start a server's job as asked: ``sbatch --test-only`` as the user, nothing queued."""

from __future__ import annotations

from typing import Any

from hpclab_hub.backends.slurm.client import SlurmClient
from hpclab_hub.backends.slurm.errors import SlurmError


async def never_starts(client: SlurmClient, user_name: str, spec: Any) -> tuple[str, str]:
    """(why SLURM would never start the job of ``spec`` ('' if it would, or cannot say now), the start it expects).

    More cores, memory or GPUs than any node of the partition has outside its reservations is refused here, with
    SLURM's words, instead of waiting out the spawn timeout. The expected start is kept for the progress page.
    """
    try:
        return "", await client.expected_start(user_name, spec.script(["true"]))
    except SlurmError as error:
        if "allocation failure:" not in error.message:  # SLURM unreachable, or another refusal: sbatch's own message decides
            return "", ""
        return (
            f"SLURM would never start this job: {error.message}. The partition's nodes, less what reservations "
            "hold, cannot fit it; ask for fewer cores, less memory or fewer GPUs, or another partition.",
            "",
        )
