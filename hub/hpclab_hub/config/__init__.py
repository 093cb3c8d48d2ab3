"""The deploy YAML: model, loader and error reporting."""

from hpclab_hub.config.errors import ConfigError, ConfigIssue
from hpclab_hub.config.loader import cached_deployment, load_deployment, parse_deployment
from hpclab_hub.config.model import Deployment, LocalBackend, Profile, SlurmBackend

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "Deployment",
    "LocalBackend",
    "Profile",
    "SlurmBackend",
    "cached_deployment",
    "load_deployment",
    "parse_deployment",
]
