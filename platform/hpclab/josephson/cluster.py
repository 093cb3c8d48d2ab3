"""Dask clusters for sweeps across nodes (the shared :mod:`hpclab.dask_cluster`, under its old name)."""

from ..dask_cluster import resolve_client, slurm_cluster, wait_for_workers

__all__ = ["resolve_client", "slurm_cluster", "wait_for_workers"]
