"""What every server gets from its profile, whatever its backend: environment variables and server arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hpclab
from hpclab.apps import app_server_extensions
from hpclab.lab_features import FEATURES_ENV, OFF_UNLESS_ASKED, SERVING_NO_ONE
from hpclab.lab_features import server_extensions as feature_extensions
from hpclab_hub.config.model import Deployment, Profile
from hpclab_hub.kernels import kernel_server_args
from hpclab_hub.ops.culling import activity_interval


def profile_env(deployment: Deployment, profile: Profile, server_name: str) -> dict[str, str]:
    """Environment every server gets from its profile (backend env first, profile env wins) and HPCLab's own."""
    env = dict(getattr(deployment.backends[profile.backend], "environment", {}))
    env.update(profile.environment)
    env["HPCLAB_PROFILE"] = profile.slug
    env["HPCLAB_BACKEND"] = profile.backend
    # each server its own JupyterLab workspace (open tabs, layout), in the home it starts in: a new
    # named server does not reopen the tabs of another one
    env.setdefault("JUPYTERLAB_WORKSPACES_DIR", f".jupyter/lab/workspaces/{server_name or 'default'}")
    if deployment.culling.enabled:
        # report activity (and busy kernels) often enough for this profile's idle timeout
        every = activity_interval(deployment.culling.timeout_for(profile))
        env["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(every)
        env["HPCLAB_BUSY_CHECK_SECONDS"] = str(every)
    examples = deployment.examples
    if examples.delivered:  # copied into <root>/examples by the hpclab.examples server extension, as the user
        env["HPCLAB_EXAMPLES_DIR"] = str(examples.source_dir)
        env["HPCLAB_EXAMPLES_TARGET"] = examples.folder
    # the profile's apps, and only those, as launcher tiles (the hpclab.apps server extension reads this)
    env["HPCLAB_APPS"] = ",".join(profile.apps)
    # the profile's JupyterLab features (hpclab.lab_features): their JupyterLab halves lifted out of disabledExtensions
    env[FEATURES_ENV] = ",".join(profile.lab_features)
    if "modules" in profile.lab_features:  # Lmod for jupyterlmod, notebooks and kernels' `modules` lines; the YAML's win
        env.update({**deployment.modules.server_env(), **env})
    # jupyter-resource-usage shows memory and CPU use against the limits the cgroup or SLURM job enforces
    env["CPU_LIMIT"] = str(profile.cpus)
    if profile.memory:
        env["MEM_LIMIT"] = str(profile.memory)
    walltime = deployment.walltime
    env["HPCLAB_WALLTIME_WARN_SECONDS"] = str(walltime.warn_before)
    env["HPCLAB_WALLTIME_SAVE_SECONDS"] = str(walltime.save_before or 0)
    return env


def server_args(deployment: Deployment, profile: Profile, log: Any) -> list[str]:
    """Server arguments every backend adds.

    JupyterLab's site settings come from hpclab/lab_settings (autosave every 15 s; no news pop-up);
    hpclab.walltime and the @hpclab/walltime plugin show the time left, warn and save open documents
    before the end; kernels, not the server, are stopped first when memory runs out (hpclab.oom_guard);
    with culling on, busy kernels count as activity (see hpclab.busy_activity); only the profile's
    kernels are offered, with the profile's limits.
    The profile's apps come from hpclab.apps in place of jupyter-server-proxy's own extension, which would
    offer every app installed; jupyter-resource-usage tracks CPU as well as memory.
    """
    package = Path(hpclab.__file__).parent
    # the extensions' code is named by its content (its URL carries ?v=<hash>): the browser may keep it, instead of
    # asking the server again for every file at every page load, as JupyterLab does by default for its dev mode
    args = [f"--LabApp.app_settings_dir={package / 'lab_settings'}", "--LabApp.cache_files=True"]
    if (package / "labextensions").is_dir():  # built by `make labextension` (platform/walltime-labextension)
        args.append(f"--LabApp.extra_labextensions_path={package / 'labextensions'}")
    else:
        log.warning("hpclab: JupyterLab's wall-time plugin is not built (make labextension)")
    args += kernel_server_args(profile.kernels, profile.initial_kernel)
    # hpclab.lab_features on every server: it leaves the JupyterLab halves of the features not asked for out of the page
    extensions = ["hpclab.walltime", "hpclab.oom_guard", "hpclab.examples", "hpclab.apps", "hpclab.lab_features"]
    if deployment.culling.enabled:
        extensions.append("hpclab.busy_activity")
    args += [f"--ServerApp.jpserver_extensions={name}=True" for name in extensions]
    args += ["--ServerApp.jpserver_extensions=jupyter_server_proxy=False", "--ResourceUseDisplay.track_cpu_percent=True"]
    # installed, and serving no one: no language server is installed for jupyter-lsp, no classic-notebook extension
    # needs notebook-shim; each would be set up at every start for nothing (issue 32)
    wanted = feature_extensions(profile.lab_features)
    # the knowledge base's git entries are pulled into the server by nbgitpuller's /git-pull (issue 31)
    pulled = ["nbgitpuller"] if deployment.knowledge_base.pulls_git else []
    for_apps = app_server_extensions(profile.apps)  # the desktop's page (jupyter_remote_desktop_proxy)
    off = [name for name in SERVING_NO_ONE + OFF_UNLESS_ASKED if name not in wanted and name not in pulled + for_apps]
    args += [f"--ServerApp.jpserver_extensions={name}=False" for name in off]
    args += [f"--ServerApp.jpserver_extensions={name}=True" for name in wanted]
    args += [f"--ServerApp.jpserver_extensions={name}=True" for name in pulled + for_apps]
    if deployment.hub.sharing:
        # the server asks the hub again what a visitor's token may do after 30 s, not JupyterHub's 5 minutes:
        # a revoked share shuts the other person out within 30 s, open connections too (hpclab.share_guard);
        # a visitor does what their share allows: read, write, execute (hpclab.share_access)
        args += [
            "--HubOAuth.cache_max_age=30",
            "--ServerApp.jpserver_extensions=hpclab.share_guard=True",
            "--ServerApp.authorizer_class=hpclab.share_access.ShareAuthorizer",
        ]
    return args
