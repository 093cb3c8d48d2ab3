# JupyterHub reads this file; everything an admin changes lives in the YAML it loads.
# The configuration `hpclab-hub run` starts JupyterHub with; HPCLAB_CONFIG names the deploy YAML.
import os

from hpclab_spawners.hubconfig import configure

configure(c, os.environ.get("HPCLAB_CONFIG") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub.yaml"))  # noqa: F821
