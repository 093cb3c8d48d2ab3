"""What every ``hpclab-hub`` command shares: the default YAML and loading it with one line per problem."""

from __future__ import annotations

import sys

from hpclab_hub.config import ConfigError, Deployment, load_deployment

DEFAULT_CONFIG = "deploy/hub.yaml"


def _load_or_report(path: str) -> Deployment | None:
    try:
        return load_deployment(path)
    except ConfigError as error:
        for issue in error.issues:
            print(f"{path}: {issue}", file=sys.stderr)
        return None
