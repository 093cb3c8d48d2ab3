# The reference hub of benchmarks/spawn_ready.py: plain JupyterHub, SimpleLocalProcessSpawner, no HPCLab.
# Started as `jupyterhub -f benchmarks/configs/bare_jupyterhub_config.py` by harness.bare_hub(), which
# sets these environment variables (free ports, a temporary folder, a fresh token):
#   BENCH_PORT, BENCH_HUB_PORT, BENCH_PROXY_API_PORT  public, internal API and proxy API ports
#   BENCH_WORKDIR      state (database, cookie secret, pid files) and the users' server folders
#   BENCH_ADMIN        the admin user whose server is started and stopped
#   BENCH_TOKEN        API token of the service `bench` (admin:users, admin:servers, access:servers, tokens)
#   BENCH_SINGLEUSER   the jupyterhub-singleuser to run (next to the venv's Python)
#   BENCH_SPAWN_TIMEOUT  optional: seconds a start may take (hub_load sets its --timeout; else JupyterHub's defaults)
import os
from pathlib import Path

env = os.environ
work = Path(env["BENCH_WORKDIR"])

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(env["BENCH_PORT"])
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env["BENCH_HUB_PORT"])
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['BENCH_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.pid_file = str(work / "jupyterhub-proxy.pid")
c.JupyterHub.pid_file = str(work / "jupyterhub.pid")
c.JupyterHub.db_url = f"sqlite:///{work / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(work / "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = True

c.JupyterHub.authenticator_class = "null"
if env.get("BENCH_LOGIN"):  # spawn_ready.py --browser: a browser logs in through the form (any password)
    c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {env["BENCH_ADMIN"]}
c.JupyterHub.services = [{"name": "bench", "api_token": env["BENCH_TOKEN"]}]
c.JupyterHub.load_roles = [{"name": "bench", "scopes": ["admin:users", "admin:servers", "access:servers", "tokens"], "services": ["bench"]}]

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(work / "home" / "{username}")
c.Spawner.cmd = [env["BENCH_SINGLEUSER"]]
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.Spawner.default_url = "/lab"
if "BENCH_SPAWN_TIMEOUT" in env:
    c.Spawner.start_timeout = c.Spawner.http_timeout = int(env["BENCH_SPAWN_TIMEOUT"])
