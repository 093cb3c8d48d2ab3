# The one JupyterHub configuration of HPCLab: everything an admin changes lives in the deploy YAML.
# `hpclab-hub run --config FILE` starts JupyterHub with this file and HPCLAB_CONFIG=FILE; to run
# `jupyterhub -f` by hand, set HPCLAB_CONFIG to the YAML yourself.
import os

from hpclab_hub.hubconfig import configure
from hpclab_hub.ops.reload import reap_inherited, reload_on_sighup

if not os.environ.get("HPCLAB_CONFIG"):
    raise SystemExit(
        "HPCLAB_CONFIG is not set: start the hub with `hpclab-hub run --config deploy/hub.yaml`, "
        "or set HPCLAB_CONFIG to the deploy YAML before `jupyterhub -f` this file"
    )
reap_inherited()  # servers a reload kept are still this process's children (ops/reload.py)
# c: the configuration JupyterHub's traitlets loader injects into this file's namespace
deployment = configure(c, os.environ["HPCLAB_CONFIG"])  # type: ignore[name-defined]  # noqa: F821
reload_on_sighup(os.environ["HPCLAB_CONFIG"], deployment)  # `hpclab-hub reload` or SIGHUP: the YAML again, servers kept
