"""The README's first command as a newcomer runs it on a workstation: a fresh clone, `make hub` as an
ordinary account (not root), log in as `admin` with the password `make hub` printed, and JupyterLab
runs a cell; anyone else is refused with the reason (a hub without root is a one-person trial).

Nothing of the test runner's Python is borrowed: a new Unix account, a `git clone` of this repository's
committed HEAD, and `make hub` as that account with a login shell's PATH (/usr/local/bin:/usr/bin:/bin,
so Debian's python3 and npm). `make hub` therefore builds the clone's own `.venv` from the lock files
(pip, hashes required), installs configurable-http-proxy (npm) and builds the lab extension.

What keeps it affordable is only what a newcomer's machine keeps between tries, their download caches:
the account's pip cache is seeded from ~/.cache/hpclab/newcomer-pip (and saved back after the run), its
npm cache from the runner's. Every package is still installed and checked against the lock's hashes
into a new venv; only the downloads are reused. Measured on the development machine: `make hub` answered
after 113-136 s (the venv about 100 s, npm 10 s, the lab extension 5 s) and the whole test took about
2.5 minutes; once, with a slow network, 6. Besides, only what lets pip and npm reach their
indexes here is passed on: their settings (PIP_*, npm_config_*), proxies and CA bundles. The public port
is a free one (HPCLAB_PORT, which `hpclab-hub run` reads), so a hub on 8000 does not collide; the hub's
internal ports stay those of deploy/hub.yaml (8081, 8001).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests
from support.browsertools import run_in_new_notebook
from support.hubtools import free_port
from support.paths import REPO_ROOT

pytestmark = [pytest.mark.hub, pytest.mark.browser]

#: Environment a new account's login shell would have, plus what lets pip and npm reach their indexes here.
PASSED_ON = re.compile(r"^(PIP_|npm_config_|NPM_CONFIG_|(https?|no|HTTPS?|NO)_PROXY$|SSL_CERT_(FILE|DIR)$|.*(CA_CERTS|CA_BUNDLE|CAINFO)$)",
                       re.IGNORECASE)
#: Downloads kept between runs, as a newcomer's own machine keeps them between tries (pip's cache of the account).
PIP_SEED = Path.home() / ".cache" / "hpclab" / "newcomer-pip"
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"  # the account's PATH has no /usr/sbin
BUILD_TIMEOUT = 900  # `make hub` up to a hub that answers; about 2 minutes with an empty pip cache


def _login_env(account: pwd.struct_passwd, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if PASSED_ON.match(key)}
    env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name, SHELL="/bin/bash",
               PATH=LOGIN_PATH, LANG="C.UTF-8", HPCLAB_PORT=str(port))
    return env


def _as(account: pwd.struct_passwd, command: list[str], **kwargs) -> subprocess.Popen:
    """Start ``command`` as ``account`` (runuser: no password, no PAM session needed)."""
    return subprocess.Popen([RUNUSER, "-u", account.pw_name, "--", *command], **kwargs)


def _copy(source: Path, target: Path, owner: str) -> None:
    """``cp -a`` a cache folder and give it to ``owner``; nothing when ``source`` is absent."""
    if source.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", f"{source}/.", str(target)], check=True)
        subprocess.run(["chown", "-R", f"{owner}:", str(target)], check=True)
        subprocess.run(["chown", f"{owner}:", str(target.parent)], check=True)


def _keep_pip_cache(home: Path) -> None:
    """Save the account's pip cache as the next run's seed (replacing the old one whole)."""
    cache = home / ".cache" / "pip"
    if not cache.is_dir():
        return
    fresh = PIP_SEED.with_name(PIP_SEED.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    subprocess.run(["cp", "-a", str(cache), str(fresh)], check=True)
    subprocess.run(["chown", "-R", f"{os.getuid()}:{os.getgid()}", str(fresh)], check=True)
    shutil.rmtree(PIP_SEED, ignore_errors=True)
    fresh.rename(PIP_SEED)


def _processes_of(uid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """A new ordinary Unix account with a fresh clone of this repository in its home; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating the newcomer's Unix account needs root (the test then runs `make hub` as that account)")
    for tool in ("runuser", "useradd", "git", "make", "npm", "/usr/bin/python3"):
        assert shutil.which(tool), f"{tool} is needed to follow the README as a newcomer"
    name = f"newbie{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    account = pwd.getpwnam(name)
    home = Path(account.pw_dir)
    try:
        npm_cache = subprocess.run(["npm", "config", "get", "cache"], capture_output=True, text=True).stdout.strip()
        _copy(PIP_SEED, home / ".cache" / "pip", name)
        _copy(Path(npm_cache or "/nonexistent"), home / ".npm", name)
        clone = home / "hpclab"
        subprocess.run(["git", "-c", "safe.directory=*", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
        subprocess.run(["chown", "-R", f"{name}:{name}", str(clone)], check=True)
        yield account, clone
    finally:
        for proc in _processes_of(account.pw_uid):  # only this test's account: its hub, proxy, server, kernels
            proc.kill()
        psutil.wait_procs(_processes_of(account.pw_uid), timeout=10)
        _keep_pip_cache(home)
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture(scope="module")
def trial_hub(newcomer, tmp_path_factory):
    """`make hub` as the newcomer, exactly as the README says; yields (url, log path, the printed admin password)."""
    account, clone = newcomer
    port = free_port()
    log_path = tmp_path_factory.mktemp("trial") / "make-hub.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        make = _as(account, ["make", "hub"], cwd=clone, env=_login_env(account, port), stdout=log, stderr=subprocess.STDOUT,
                   start_new_session=True)
    url = f"http://localhost:{port}"  # what `make hub` prints; the admin's server then at admin.localhost
    try:
        deadline = started + BUILD_TIMEOUT
        phases: dict[str, float] = {}  # when each step of `make hub` began, for the report below
        while True:
            text = log_path.read_text(errors="replace")
            for step, mark in (("venv", "-m venv"), ("proxy", "configurable-http-proxy@"), ("labextension", "jupyter-builder build"),
                               ("hub", "hpclab-hub run")):
                if mark in text and step not in phases:
                    phases[step] = time.monotonic() - started
            if make.poll() is not None:
                pytest.fail(f"make hub exited with {make.returncode}:\n{text[-6000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"make hub: no hub after {BUILD_TIMEOUT} s:\n{text[-6000:]}")
            with_password = re.search(r"user:\s+admin\s+password:\s+(\S+)", text)
            try:
                if with_password and requests.get(f"{url}/hub/api/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert f"starting JupyterHub on {url}/" in text and f"http://alice.localhost:{port}/user/alice/" in text, text[-3000:]
        steps = ", ".join(f"{step} from {at:.0f} s" for step, at in phases.items())
        print(f"\nmake hub as {account.pw_name} on a fresh clone: the hub answered after {time.monotonic() - started:.0f} s ({steps})")
        yield url, log_path, with_password.group(1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGTERM)  # Ctrl-C in the terminal running `make hub`
        try:
            make.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def test_make_hub_as_a_normal_user_ends_in_jupyterlab_and_refuses_anyone_else(newcomer, trial_hub, browser, artifacts):
    account, clone = newcomer
    url, log_path, password = trial_hub
    said = log_path.read_text(errors="replace")
    me = account.pw_name
    assert f"mode: one-person trial (no root; the hub runs as '{me}'): 'admin' logs in, servers run as '{me}'" in said, said
    assert "not enforced without root: memory of all a server's processes together" in said
    assert "as root (several people)" in said

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(90_000)
    try:
        page.goto(f"{url}/hub/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", password)
        page.click("#login_submit")
        page.wait_for_url("**/hub/spawn**")
        assert page.locator("input[name=profile][value=cpu-small]").is_checked()  # the default profile
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/admin/lab**", timeout=180_000)
        assert page.url.startswith(url.replace("://", "://admin.", 1) + "/user/admin/lab"), page.url  # at her own host name
        run_in_new_notebook(page, "import getpass, os, resource; print('ran as', getpass.getuser(), 'in', os.getcwd(), "
                                  "'cores', len(os.sched_getaffinity(0)), 'data', resource.getrlimit(resource.RLIMIT_DATA)[0])")
        output = page.locator(".jp-OutputArea-output", has_text="ran as").first
        output.wait_for(timeout=90_000)
        page.screenshot(path=str(artifacts / "trial-without-root-jupyterlab.png"), full_page=True)
        # the hub's own account, in ~/hpclab-trial; the profile's 1 core and 2G applied without root
        assert output.inner_text().strip() == f"ran as {me} in {account.pw_dir}/hpclab-trial cores 1 data {2 * 1024**3}"
    except Exception:
        page.screenshot(path=str(artifacts / "trial-without-root-failure.png"), full_page=True)
        raise
    finally:
        page.close()

    # the admin adds a colleague from the shell, as the README says: told at once that bob cannot log in
    add = subprocess.run([RUNUSER, "-u", me, "--", ".venv/bin/hpclab-hub", "users", "add", "bob", "--password-stdin"],
                         input="bob-has-a-password-1\n", text=True, capture_output=True, cwd=clone, env=_login_env(account, 0))
    assert add.returncode == 0 and "created account bob" in add.stdout, add.stderr
    assert "bob cannot log in while the hub runs without root" in add.stderr, add.stderr

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    other = context.new_page()
    try:
        other.goto(f"{url}/hub/login")
        other.fill("input[name=username]", "bob")
        other.fill("input[name=password]", "bob-has-a-password-1")
        other.click("#login_submit")
        body = other.locator("body")
        body.get_by_text("one-person trial", exact=False).first.wait_for()
        text = " ".join(body.inner_text().split())
        other.screenshot(path=str(artifacts / "trial-without-root-second-user.png"), full_page=True)
        assert (f"Login refused: This HPCLab hub is a one-person trial: it runs without root (as the Unix account '{me}'), "
                "so it can start servers only as that account, and only for 'admin'.") in text, text
        assert "/user/bob" not in other.url

        other.goto(f"{url}/hub/signup")  # and the sign-up page says so before anyone fills it in
        assert "one-person trial" in " ".join(other.locator("body").inner_text().split())
    finally:
        context.close()
