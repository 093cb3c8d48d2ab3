"""Shared test helpers, one module per real component: the hub (hubtools), the browser (browsertools),
kernels (kerneltools, notebooktools), the dev SLURM (slurmtools), the dl venv (dltools), MRI data."""
