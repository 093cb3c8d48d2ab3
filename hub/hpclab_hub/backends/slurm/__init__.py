"""The SLURM backend: one small client for SLURM commands, a shared job poller, the batch script, the spawner."""
