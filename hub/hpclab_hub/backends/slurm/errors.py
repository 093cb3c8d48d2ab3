"""What a SLURM command failing looks like to the hub: SLURM's own words, or no answer at all."""

from __future__ import annotations


class SlurmError(Exception):
    """A SLURM command failed; ``message`` is SLURM's own words."""

    def __init__(self, message: str, command: str = ""):
        super().__init__(message)
        self.message = message
        self.command = command


class SlurmUnavailable(SlurmError):
    """SLURM did not answer (controller down, command timed out): state is unknown, not 'gone'."""
