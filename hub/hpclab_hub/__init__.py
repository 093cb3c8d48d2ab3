"""Everything the HPCLab hub process imports: deploy YAML model, profiles, spawn form, spawners."""

__version__ = "0.1.0"
