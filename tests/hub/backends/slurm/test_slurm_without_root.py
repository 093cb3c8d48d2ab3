"""A hub that is not root, against the real dev cluster: the hub runs as its own account ``hpclab`` and reaches the
people only through the shipped sudoers rule (deploy/sudoers/hpclab) and the root-owned submit wrapper
(deploy/libexec/hpclab-submit), installed where an admin installs them; its SLURM operator rights come from sacctmgr.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import psutil
import pytest
import requests

from support.hubtools import HUB_CLI, Hub, add_account, hub_yaml, login, make_reachable, stop_server
from support.paths import REPO_ROOT
from support.slurmtools import jobs, slurm, wait_for

pytestmark = pytest.mark.hub

WRAPPER = Path("/usr/local/libexec/hpclab-submit")
WRAPPER_CONF = Path("/etc/hpclab/submit.conf")
SUDOERS = Path("/etc/sudoers.d/hpclab")
SHIPPED_SUDOERS = REPO_ROOT / "deploy" / "sudoers" / "hpclab"
HUB_ID = "without-root"


def test_shipped_sudoers_file_passes_visudo():
    checked = subprocess.run(["visudo", "-c", "-f", str(SHIPPED_SUDOERS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = "\n".join(line for line in SHIPPED_SUDOERS.read_text().splitlines() if not line.startswith("#"))
    assert "SETENV" not in text and "/usr/bin/env" not in text  # no environment kept, no `env`: nothing but the wrapper


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def hpclab_account() -> None:
    """The hub's own account hpclab (a system account, home /var/lib/hpclab), as docs/slurm.md makes it."""
    if run("id", "hpclab").returncode != 0:
        run(
            "useradd",
            "--system",
            "--create-home",
            "--home-dir",
            "/var/lib/hpclab",
            "--shell",
            "/usr/sbin/nologin",
            "hpclab",
            check=True,
        )


@pytest.fixture(scope="module")
def installed(slurm_cluster, hpclab_account):
    """The account hpclab, the group hpclab-users (alice, bob), the wrapper, its configuration and the sudoers file
    installed as docs/slurm.md says, and hpclab a SLURM operator; all of it removed afterwards."""
    if run("getent", "group", "hpclab-users").returncode != 0:
        run("groupadd", "--system", "hpclab-users", check=True)
    for name in ("alice", "bob"):
        run("usermod", "-aG", "hpclab-users", name, check=True)
    before = {path: path.read_bytes() if path.exists() else None for path in (WRAPPER, WRAPPER_CONF, SUDOERS)}
    run(
        "install",
        "-D",
        "-m",
        "0755",
        "-o",
        "root",
        "-g",
        "root",
        str(REPO_ROOT / "deploy/libexec/hpclab-submit"),
        str(WRAPPER),
        check=True,
    )
    WRAPPER_CONF.parent.mkdir(mode=0o755, exist_ok=True)
    WRAPPER_CONF.write_text(f"# written by {__name__}\nbin_dir = /usr/bin\nslurm_conf = {slurm_cluster}\n")
    WRAPPER_CONF.chmod(0o644)
    run("visudo", "-c", "-f", str(SHIPPED_SUDOERS), check=True)
    run("install", "-m", "0440", "-o", "root", "-g", "root", str(SHIPPED_SUDOERS), str(SUDOERS), check=True)
    slurm(slurm_cluster, "sacctmgr", "-i", "add", "user", "hpclab", "account=teaching", "adminlevel=operator")
    try:
        yield slurm_cluster
    finally:
        for path, content in before.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        slurm(slurm_cluster, "sacctmgr", "-i", "delete", "user", "hpclab", check=False)


def as_hpclab(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run(
        "setpriv", "--reuid=hpclab", "--regid=hpclab", "--init-groups", "env", "-i", "PATH=/usr/bin:/bin", *argv, input=stdin
    )


def test_sudo_lets_the_hub_account_run_the_wrapper_as_group_members_and_nothing_else(installed):
    request = json.dumps({"environment": {"PATH": "/usr/bin:/bin"}, "script": "#!/bin/bash\n#SBATCH -p cpu\ntrue\n"})
    allowed = as_hpclab("sudo", "-n", "-u", "alice", str(WRAPPER), "sbatch", "--test-only", stdin=request)
    assert allowed.returncode == 0 and "to start at" in allowed.stderr, allowed.stderr
    refused = {
        "env as alice": ("sudo", "-n", "-u", "alice", "/usr/bin/env", "id"),
        "the wrapper as root": ("sudo", "-n", "-u", "root", str(WRAPPER), "scancel", "1"),
        "the wrapper as hpclab itself": ("sudo", "-n", "-u", "hpclab", str(WRAPPER), "scancel", "1"),
        "sbatch with other options": ("sudo", "-n", "-u", "alice", str(WRAPPER), "sbatch", "--wrap=id"),
        "sbatch -E": ("sudo", "-n", "-E", "-u", "alice", str(WRAPPER), "sbatch", "--parsable"),
    }
    for what, argv in refused.items():
        done = as_hpclab(*argv, stdin=request)
        assert done.returncode != 0 and ("password is required" in done.stderr or "not allowed" in done.stderr), what
    # what sudo's `scancel *` lets through, the wrapper itself refuses
    for argv in (["scancel", "1;id"], ["scancel", "1", "2"], ["scancel", "--user=bob"]):
        done = as_hpclab("sudo", "-n", "-u", "alice", str(WRAPPER), *argv)
        assert done.returncode == 2 and "hpclab-submit: refused" in done.stderr, argv
    bad = json.dumps({"environment": {"A B": "x"}, "script": "#!/bin/bash\ntrue\n"})
    done = as_hpclab("sudo", "-n", "-u", "alice", str(WRAPPER), "sbatch", "--parsable", stdin=bad)
    assert done.returncode == 2 and "hpclab-submit: refused" in done.stderr
    assert run(str(WRAPPER), "scancel", "1").stderr.startswith("hpclab-submit: refused: runs as the person")


class HubAsHpclab(Hub):
    """A hub started as the account hpclab (setpriv), its data folder owned by it."""

    def start(self, timeout: float = 60) -> None:
        make_reachable(self.config_path)
        data_dir = Path(self.config["hub"]["data_dir"])
        data_dir.mkdir(parents=True, exist_ok=True)
        for path in [data_dir, *data_dir.rglob("*")]:
            shutil.chown(path, "hpclab", "hpclab")
        env = dict(os.environ, HPCLAB_ADMIN_PASSWORD="unused-admin-password-5", HOME="/var/lib/hpclab", USER="hpclab")
        env["PATH"] = f"{Path(HUB_CLI).parent}:/usr/local/bin:/usr/bin:/bin"
        argv = [
            "setpriv",
            "--reuid=hpclab",
            "--regid=hpclab",
            "--init-groups",
            str(HUB_CLI),
            "run",
            "--config",
            str(self.config_path),
        ]
        self.launch(argv, env, timeout, cwd=data_dir)


class HubRunAsHpclab(Hub):
    """A hub started as root, as the shipped unit starts it, with ``hpclab-hub run --user hpclab``."""

    def start(self, timeout: float = 60) -> None:
        make_reachable(self.config_path)
        env = dict(os.environ, HPCLAB_ADMIN_PASSWORD="unused-admin-password-5")
        env["PATH"] = f"{Path(HUB_CLI).parent}:/usr/local/bin:/usr/bin:/bin"
        self.launch([str(HUB_CLI), "run", "--config", str(self.config_path), "--user", "hpclab"], env, timeout)


def without_root_yaml(data_dir: Path, conf: str, **backend) -> dict:
    return hub_yaml(
        data_dir,
        hub={**hub_yaml(data_dir)["hub"], "id": HUB_ID},
        backends={
            "cluster": {
                "type": "slurm",
                "slurm_conf": conf,
                "poll_interval": 2,
                "command_timeout": 20,
                "orphan_jobs": "cancel",
                **backend,
            }
        },
        profiles=[
            {
                "slug": "cpu",
                "display_name": "CPU job",
                "backend": "cluster",
                "cpus": 1,
                "memory": "512M",
                "time_limit": "00:10:00",
                "default": True,
                "slurm": {"partition": "cpu"},
                "choices": {"time_limit": {"min": "00:05:00", "max": "01:00:00"}},
            }
        ],
    )


def test_hub_without_root_refuses_sudo_env_and_names_the_wrapper(installed, tmp_path):
    make_reachable(tmp_path / "x")
    hub = HubAsHpclab(tmp_path, without_root_yaml(tmp_path / "state", installed))
    with pytest.raises(RuntimeError) as refused:
        hub.start(timeout=30)
    assert "not starting: backends.cluster: this hub is not root" in str(refused.value)
    assert "submit_wrapper: /usr/local/libexec/hpclab-submit" in str(refused.value)


def test_hub_as_hpclab_submits_extends_cancels_orphans_and_stops_through_the_wrapper(installed, tmp_path):
    conf = installed
    make_reachable(tmp_path / "x")
    hub = HubAsHpclab(tmp_path, without_root_yaml(tmp_path / "state", conf, submit_wrapper=str(WRAPPER)))
    orphan = slurm(
        conf,
        "sbatch",
        "--parsable",
        "-p",
        "cpu",
        "-c",
        "1",
        "-J",
        "hpclab-bob",
        f"--comment=hpclab:{HUB_ID}:cpu",
        "--mem=100M",
        "--output=/dev/null",
        "--chdir=/tmp",
        "--wrap",
        "sleep 600",
        user="bob",
    ).strip()
    assert orphan in {j["id"] for j in jobs(conf)}  # queued or running: only the hub ends it
    for name in ("alice", "bob"):
        add_account(hub, name)
    try:
        hub.start()
        assert psutil.Process(hub.proc.pid).username() == "hpclab"
        alice = login(hub, "alice")
        assert alice.post_spawn("alice", "cpu").status_code == 302
        alice.wait_ready("alice", timeout=90)
        # at its first poll, the orphan (bob's job, this hub's tag) is cancelled by the hub's own account, a SLURM operator
        wait_for(lambda: orphan not in {j["id"] for j in jobs(conf)}, 30, f"orphan job {orphan} was not cancelled")
        assert f"Cancelling orphan SLURM job {orphan}" in hub.log_tail(2000)

        (job,) = [j for j in jobs(conf) if j["user"] == "alice"]
        server = wait_for(
            lambda: [
                p
                for p in psutil.process_iter(["username", "cmdline"])
                if p.info["username"] == "alice" and any("jupyterhub-singleuser" in part for part in p.info["cmdline"] or [])
            ],
            30,
            "no server process running as alice",
        )[0]
        env = server.environ()
        assert env["SLURM_JOB_ID"] == job["id"] and env["JUPYTERHUB_API_TOKEN"]  # the token came through the pipe
        assert env["JUPYTERHUB_API_TOKEN"] not in subprocess.run(["ps", "-efww"], capture_output=True, text=True).stdout
        assert env["JUPYTERHUB_API_TOKEN"] not in hub.log_path.read_text(errors="replace")
        assert alice.http.get(hub.user_url("alice") + "lab").status_code == 200

        extended = alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 5})
        assert extended.status_code == 200, extended.text
        assert slurm(conf, "squeue", "-h", "-j", job["id"], "-o", "%l").strip() == "15:00"

        # without operator rights the same extension is refused with what to do, and nothing changes
        slurm(conf, "sacctmgr", "-i", "modify", "user", "hpclab", "set", "adminlevel=none")
        try:
            wait_for(lambda: "None" in slurm(conf, "sacctmgr", "-n", "-P", "show", "user", "hpclab", "format=admin"), 30,
                     "sacctmgr did not take the operator rights away")
            refused = alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 5})
            assert refused.status_code >= 400, refused.text
            assert "adminlevel=operator" in refused.text and "docs/slurm.md" in refused.text, refused.text
            assert slurm(conf, "squeue", "-h", "-j", job["id"], "-o", "%l").strip() == "15:00"  # not half-done
            assert alice.http.get(hub.user_url("alice") + "lab").status_code == 200  # the server is unharmed
        finally:
            slurm(conf, "sacctmgr", "-i", "modify", "user", "hpclab", "set", "adminlevel=operator")

        stop_server(alice, "alice")  # scancel as alice, through the wrapper
        wait_for(lambda: not [j for j in jobs(conf) if j["user"] == "alice"], 30, "alice's job outlived her server")
    finally:
        hub.stop()
        hub.kill_servers()
        for name in ("alice", "bob"):
            subprocess.run(["scancel", f"--user={name}"], env={"SLURM_CONF": conf, "PATH": "/usr/bin:/bin"}, check=False)


def test_run_user_drops_a_root_started_slurm_hub_to_hpclab_and_gives_it_the_data_dir(installed, tmp_path):
    """`run --user hpclab` as root: the hub's own process is hpclab in every id (no root group left), data_dir and
    what root left in it are hpclab's, and the hub answers and keeps its users in its database as hpclab."""
    make_reachable(tmp_path / "x")
    data_dir = tmp_path / "state"
    data_dir.mkdir(mode=0o755)
    (data_dir / "left-by-root").write_text("an earlier start as root")  # e.g. a database from a hub run as root
    hub = HubRunAsHpclab(tmp_path, without_root_yaml(data_dir, installed, submit_wrapper=str(WRAPPER)))
    add_account(hub, "alice")
    hpclab = pwd.getpwnam("hpclab")
    try:
        hub.start()
        process = psutil.Process(hub.proc.pid)
        # the hub itself (run becomes JupyterHub in its own process), not a wrapper around it: JupyterHub's pid file
        assert (data_dir / "jupyterhub.pid").read_text().strip() == str(process.pid), process.cmdline()
        # dumpable again after the drop, as after an exec: its /proc is hpclab's (`hpclab-hub reload` as hpclab reads
        # the YAML's path from its environment), and the environment shown is the hub's own
        assert Path(f"/proc/{process.pid}/environ").stat().st_uid == hpclab.pw_uid
        assert process.environ().get("HPCLAB_CONFIG") == str(hub.config_path.resolve())
        assert tuple(process.uids()) == (hpclab.pw_uid,) * 3 and tuple(process.gids()) == (hpclab.pw_gid,) * 3
        status = Path(f"/proc/{process.pid}/status").read_text()
        groups = {int(g) for g in status.split("Groups:")[1].splitlines()[0].split()}
        assert 0 not in groups and groups <= set(os.getgrouplist("hpclab", hpclab.pw_gid)), groups
        assert status.split("CapEff:")[1].split()[0] == "0000000000000000"  # no capability kept
        for path in [data_dir, *data_dir.rglob("*")]:
            assert path.stat().st_uid == hpclab.pw_uid, path
        assert (data_dir / "jupyterhub.sqlite").exists() and stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        answer = requests.get(f"{hub.url}/hub/api/", timeout=10)
        assert answer.status_code == 200 and "version" in answer.json()
        alice = login(hub, "alice")  # the database is writable as hpclab: a login records the user
        assert alice.api("GET", "/users/alice").json()["name"] == "alice"
        assert "running as hpclab" in hub.log_tail(200)
    finally:
        hub.stop()
        hub.kill_servers()


def test_run_user_refuses_a_yaml_with_a_local_backend_before_anything_changes(hpclab_account, tmp_path):
    """A local backend needs root (accounts, cgroups, a drop to each user): refused with that reason, data_dir untouched."""
    make_reachable(tmp_path / "x")
    data_dir = tmp_path / "state"
    data_dir.mkdir(mode=0o755)
    hub = HubRunAsHpclab(tmp_path, hub_yaml(data_dir))  # the default test YAML: one local backend
    with pytest.raises(RuntimeError) as refused:
        hub.start(timeout=30)
    message = str(refused.value)
    assert "not starting: --user hpclab: backends.local is a local backend, which needs a hub running as root" in message
    assert data_dir.stat().st_uid == 0 and not any(data_dir.iterdir())  # nothing handed over, nothing started
