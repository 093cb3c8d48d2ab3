"""JupyterLab features a profile turns on (real-time collaboration, SLURM jobs, modules, dask, GPU dashboards).

Each feature is a well-kept package with a server half (a Jupyter server extension) and a JupyterLab half (a
federated extension). Both halves are installed in the server's environment but off by default: the hub turns a
server's halves on from its profile's ``lab_features`` (``--ServerApp.jpserver_extensions`` for the server half,
``HPCLAB_LAB_FEATURES`` for this module, a server extension on every server, which leaves the other features'
JupyterLab halves out of the page and lifts the wanted ones out of ``disabledExtensions`` in
hpclab/lab_settings/page_config.json). A server whose profile asks for none loads none of them (issue 32).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LabFeature:
    """One feature: what it is for, its server extensions and its JupyterLab extensions."""

    title: str
    server_extensions: tuple[str, ...]
    lab_extensions: tuple[str, ...]
    #: environment the server (and so its kernels) gets with the feature
    environment: tuple[tuple[str, str], ...] = ()
    #: why the feature cannot work on the machine asking ('' when it can): then it stays off there, with that note
    unavailable: Callable[[], str] | None = None


def gpu_driver_problem() -> str:
    """Why NVIDIA's management library (NVML) cannot be used on this machine, '' when it can: the GPU dashboards read it."""
    import pynvml  # deferred: only servers and checks that ask for the GPU dashboards need it

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return f"no NVIDIA driver on {os.uname().nodename} (NVML: {error}): the GPU dashboards are off on this server"
    pynvml.nvmlShutdown()
    return ""


#: every feature a profile's ``lab_features`` may name
LAB_FEATURES: dict[str, LabFeature] = {
    "collaboration": LabFeature(
        "real-time collaboration (jupyter-collaboration)",
        ("jupyter_server_ydoc", "jupyter_server_fileid"),
        ("@jupyter/collaboration-extension", "@jupyter/docprovider-extension"),
    ),
    "slurm-jobs": LabFeature("the user's SLURM jobs (jupyterlab-slurm)", ("jupyterlab_slurm",), ("jupyterlab-slurm",)),
    "modules": LabFeature("environment modules, `module load` (jupyterlmod)", ("jupyterlmod",), ("@cmd-ntrf/jupyterlab-lmod",)),
    "dask": LabFeature(
        "dask dashboards (dask-labextension)",
        ("dask_labextension",),
        ("dask-labextension",),
        # hpclab.dask_cluster's clusters serve their dashboard on the loopback, linked through the server's proxy; the dask
        # panel's "+NEW" makes one sized to the server's allocation (dask config labextension.factory: lab_cluster)
        (
            ("HPCLAB_DASK_DASHBOARD", "1"),
            ("DASK_DISTRIBUTED__DASHBOARD__LINK", "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"),
            ("DASK_LABEXTENSION__FACTORY__MODULE", "hpclab.dask_cluster"),
            ("DASK_LABEXTENSION__FACTORY__CLASS", "lab_cluster"),
        ),
    ),
    "gpu-dashboard": LabFeature(
        "GPU dashboards (jupyterlab-nvdashboard)",
        ("jupyterlab_nvdashboard",),
        ("jupyterlab-nvdashboard",),
        unavailable=gpu_driver_problem,
    ),
}

#: server extensions the environment installs that no HPCLab server uses: off on every server
SERVING_NO_ONE = ("jupyter_lsp", "notebook_shim")
#: server extensions installed for some profiles or apps only (issue 30): off unless the profile turns them on; their
#: JupyterLab halves are off in hpclab/lab_settings/page_config.json the same way
OFF_UNLESS_ASKED = (
    "jupyter_server_ydoc",
    "jupyter_server_fileid",
    "jupyter_remote_desktop_proxy",
    "jupyterlab_nvdashboard",
    "jupyterlab_slurm",
    "jupyterlmod",
    "dask_labextension",
    "nbgitpuller",
)

#: the environment variable naming a server's features, comma-separated (set by the hub)
FEATURES_ENV = "HPCLAB_LAB_FEATURES"


def feature_names(value: str | None) -> list[str]:
    """The names in an ``HPCLAB_LAB_FEATURES`` value ('collaboration,dask'), in order, blanks dropped."""
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def server_extensions(names: list[str]) -> list[str]:
    """The server extensions the named features need, in order, each once."""
    found: list[str] = []
    for name in names:
        for extension in LAB_FEATURES[name].server_extensions:
            if extension not in found:
                found.append(extension)
    return found


def _disabled_by(labextension_paths: list[str], name: str) -> list[str]:
    """What a federated extension's package.json says it replaces (``jupyterlab.disabledExtensions``)."""
    for folder in labextension_paths:
        package = Path(folder, name, "package.json")
        if package.is_file():
            replaced = json.loads(package.read_text()).get("jupyterlab", {}).get("disabledExtensions", [])
            return [str(plugin) for plugin in replaced]
    return []


def lift(page_config: dict[str, Any], names: list[str], labextension_paths: list[str]) -> dict[str, Any]:
    """``page_config`` with the named features' JupyterLab extensions enabled, and what they replace disabled; the
    other features' extensions left out of the page altogether.

    Left out, not only disabled: JupyterLab still fetches a disabled extension's code, and some plugins' ids do not
    start with their package's name (jupyterlab-lmod's is ``jupyterlab_lmod``), so disabling by package misses them.
    JupyterLab skips the replacement list of an extension that page_config.json disables, so it is applied here.
    """
    wanted = {extension for name in names for extension in LAB_FEATURES[name].lab_extensions}
    unwanted = {extension for feature in LAB_FEATURES.values() for extension in feature.lab_extensions} - wanted
    federated = page_config.get("federated_extensions", [])
    page_config["federated_extensions"] = [entry for entry in federated if entry.get("name") not in unwanted]
    disabled = [entry for entry in page_config.get("disabledExtensions", []) if entry not in wanted]
    for extension in sorted(wanted):
        disabled += [plugin for plugin in _disabled_by(labextension_paths, extension) if plugin not in disabled]
    page_config["disabledExtensions"] = disabled
    return page_config


def _dask_config_from_environment() -> None:
    """Lay the DASK_* variables over dask's config where the server imported dask already (dask-labextension loads
    before this extension, and dask reads them once, at import): the server's own clusters follow them too."""
    config = sys.modules.get("dask.config")
    if config is not None:  # else dask reads them itself when something imports it
        config.update(config.config, config.collect_env({k: v for k, v in os.environ.items() if k.startswith("DASK_")}))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hpclab.lab_features"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    names = [name for name in feature_names(os.environ.get(FEATURES_ENV)) if name in LAB_FEATURES]
    from jupyter_core.paths import jupyter_path  # deferred: the server's, not needed by `import hpclab`
    from tornado.ioloop import IOLoop  # deferred: as above

    # a feature this machine cannot serve (the GPU dashboards without a driver) stays off, with its note in the log
    # and in the page config (hpclabFeaturesOff), where the lab and tests read it
    off = {name: why for name in names if (check := LAB_FEATURES[name].unavailable) is not None and (why := check())}
    for name, why in off.items():
        server_app.log.warning("hpclab lab features: %s is off: %s", name, why)
    names = [name for name in names if name not in off]
    for name in names:
        for key, value in LAB_FEATURES[name].environment:
            os.environ.setdefault(key, value)  # the server's kernels inherit it
    _dask_config_from_environment()
    paths = [*jupyter_path("labextensions")]
    settings = server_app.web_app.settings

    def install() -> None:
        # after every extension has loaded: JupyterHub's single-user extension sets its own hook, which is kept
        previous = settings.get("page_config_hook")

        def hook(handler: Any, page_config: dict[str, Any]) -> dict[str, Any]:
            if previous is not None:
                page_config = previous(handler, page_config)
            page_config["hpclabFeaturesOff"] = off
            return lift(page_config, names, paths)

        settings["page_config_hook"] = hook

    IOLoop.current().add_callback(install)
    server_app.log.info("hpclab lab features: %s", ", ".join(names) or "none")
