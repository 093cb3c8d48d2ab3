"""The deploy YAML: model, loader and error reporting."""

from .errors import ConfigError, ConfigIssue
from .loader import cached_deployment, load_deployment, parse_deployment
from .model import Deployment, LocalBackend, Profile, SlurmBackend

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
