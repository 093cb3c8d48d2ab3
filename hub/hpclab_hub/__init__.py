"""The HPCLab hub: JupyterHub configured from one deploy YAML, with local and SLURM backends (docs/design.md)."""

__version__ = "0.1.0"
