# The one JupyterHub configuration of HPCLab: everything an admin changes lives in the deploy YAML.
# `hpclab-hub run --config FILE` starts JupyterHub with this file and HPCLAB_CONFIG=FILE; to run
# `jupyterhub -f` by hand, set HPCLAB_CONFIG to the YAML yourself.
import os

from hpclab_hub.backends.local.zygote import warm_zygotes
from hpclab_hub.hubconfig import configure
from hpclab_hub.reload import adopt_kept_sockets, drain_on_stop, reap_inherited, reload_on_sighup

if not os.environ.get("HPCLAB_CONFIG"):
    raise SystemExit(
        "HPCLAB_CONFIG is not set: start the hub with `hpclab-hub run --config deploy/hub.yaml`, "
        "or set HPCLAB_CONFIG to the deploy YAML before `jupyterhub -f` this file"
    )
adopt_kept_sockets()  # the old hub's listening socket, after a reload: no connection refused meanwhile
drain_on_stop()  # a stop or reload answers the requests in flight before it ends; new ones wait (reload.py)
reap_inherited()  # servers a reload kept are still this process's children (reload.py)
# c: the configuration JupyterHub's traitlets loader injects into this file's namespace
deployment = configure(c, os.environ["HPCLAB_CONFIG"])  # type: ignore[name-defined]  # noqa: F821
# a stop that leaves the servers running leaves their proxy running too: the next hub adopts it (reload.py)
c.JupyterHub.cleanup_proxy = not deployment.hub.keep_servers_on_restart  # type: ignore[name-defined]  # noqa: F821
reload_on_sighup(os.environ["HPCLAB_CONFIG"], deployment)  # `hpclab-hub reload` or SIGHUP: the YAML again, servers kept
# the local backends' zygotes start with the hub, not at the first start (which would wait for their imports)
zygotes = {name: getattr(backend, "zygote", False) for name, backend in deployment.backends.items()}
warm_zygotes({name: kind == "spare" for name, kind in zygotes.items() if kind})
