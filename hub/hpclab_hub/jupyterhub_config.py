# The one JupyterHub configuration of HPCLab: everything an admin changes lives in the deploy YAML.
# `hpclab-hub run --config FILE` starts JupyterHub with this file and HPCLAB_CONFIG=FILE; to run
# `jupyterhub -f` by hand, set HPCLAB_CONFIG to the YAML yourself.
import os

from hpclab_hub.hubconfig import configure

if not os.environ.get("HPCLAB_CONFIG"):
    raise SystemExit("HPCLAB_CONFIG is not set: start the hub with `hpclab-hub run --config deploy/hub.yaml`, "
                     "or set HPCLAB_CONFIG to the deploy YAML before `jupyterhub -f` this file")
configure(c, os.environ["HPCLAB_CONFIG"])  # noqa: F821
