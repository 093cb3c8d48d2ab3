"""``pip install --user`` in a curated kernel (issue 30, item 6), with real kernels started as JupyterLab starts them.

The curated venvs (.venv: josephson and mri; .venv-dl: dl) are set up by their build steps with hpclab.curated_venv; the
kernel launcher gives each kernel its own PYTHONUSERBASE, ``~/.local/hpclab/<kernel>``. A wheel built here (no network)
installed with ``%pip install --user`` in the josephson kernel imports there after a restart, and neither in the mri
kernel (the same venv) nor in the dl kernel; no site-packages of the base Python is on a kernel's sys.path, and
``pip check`` looks at the venv and the kernel's user site only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from hpclab.curated_venv import problems, pyvenv_cfg
from support.dltools import DL_VENV, require_dl_venv

MAIN_VENV = Path(sys.prefix)
HUB_CLI = Path(sys.executable).with_name("hpclab-hub")
WHEEL = "hpclab_user_site_probe"


def _wheel(folder: Path) -> Path:
    """A one-module wheel, written by hand (a wheel is a zip with its metadata and RECORD): nothing to download."""
    dist = f"{WHEEL}-1.0.dist-info"
    files = {
        f"{WHEEL}.py": "WHO = 'installed with pip install --user'\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: hpclab-user-site-probe\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hpclab-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(text: str) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    files[f"{dist}/RECORD"] = "".join(f"{p},{digest(t)},{len(t.encode())}\n" for p, t in files.items()) + f"{dist}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{WHEEL}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The curated kernels installed into a prefix (JUPYTER_PATH), a home of their own and a folder with the wheel."""
    require_dl_venv()
    tmp = tmp_path_factory.mktemp("user-site")
    config = tmp / "hub.yaml"
    config.write_text(
        "backends: {local: {type: local}}\n"
        "profiles: [{slug: small, display_name: Small, backend: local}]\n"
        "kernels:\n"
        f"  josephson: {{display_name: Josephson, runtime: {{type: venv, prefix: {MAIN_VENV}}}}}\n"
        f"  mri: {{display_name: MRI, runtime: {{type: venv, prefix: {MAIN_VENV}}}}}\n"
        f"  dl: {{display_name: Deep learning, runtime: {{type: venv, prefix: {DL_VENV}}}}}\n"
    )
    proc = subprocess.run([str(HUB_CLI), "kernels", "install", "--config", str(config), "--prefix", str(tmp / "prefix")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _wheel(tmp / "wheels")
    (tmp / "home").mkdir()
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(tmp / "prefix" / "share" / "jupyter")  # where jupyter_client looks the kernels up
    try:
        yield tmp
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(tmp / "home"), JUPYTER_PATH=str(tmp / "prefix" / "share" / "jupyter"))
    for key in ("PYTHONUSERBASE", "VIRTUAL_ENV", "PIP_USER", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        env.pop(key, None)
    return env


def _run(kc, code: str) -> str:
    """Run ``code``; its stdout (a failing cell fails the test with its error)."""
    out: list[str] = []
    errors: list[dict] = []

    def hook(msg: dict) -> None:
        if msg["header"]["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["header"]["msg_type"] == "error":
            errors.append(msg["content"])

    reply = kc.execute_interactive(code, timeout=180, output_hook=hook)
    assert reply["content"]["status"] == "ok", (errors, "".join(out))
    return "".join(out)


PROBE = f"""
import importlib.util, json, os, site, sys
print(json.dumps({{
    "found": importlib.util.find_spec("{WHEEL}") is not None,
    "path": sys.path, "base": sys.base_prefix, "userbase": os.environ.get("PYTHONUSERBASE"),
    "user_site_on": site.ENABLE_USER_SITE, "user_site": site.getusersitepackages(),
}}))
"""


def _probe(kc) -> dict:
    return json.loads(_run(kc, PROBE).strip().splitlines()[-1])


def _no_base_packages(seen: dict) -> None:
    assert "/usr/lib/python3/dist-packages" not in seen["path"]
    base = os.path.realpath(seen["base"])
    packages = [p for p in seen["path"] if p.endswith(("site-packages", "dist-packages"))]
    leaked = [p for p in packages if os.path.realpath(p).startswith(base + "/")]
    assert not leaked, leaked  # the base Python's own site-packages (here a pyenv's; Debian's dist-packages in the images)


def test_pip_install_user_in_one_curated_kernel_is_seen_there_and_in_no_other(setup):
    env = _env(setup)
    home = setup / "home"
    km, kc = start_new_kernel(kernel_name="josephson", startup_timeout=120, env=env)
    try:
        before = _probe(kc)
        assert before["userbase"] == str(home / ".local" / "hpclab" / "josephson") and before["user_site_on"] is True
        assert not before["found"]
        _no_base_packages(before)
        out = _run(kc, f"%pip install --user --no-index --find-links {setup / 'wheels'} hpclab-user-site-probe")
        assert "Successfully installed hpclab-user-site-probe-1.0" in out, out
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=120)
        after = _probe(kc)
        assert after["found"] and after["user_site"] in after["path"], after
        assert after["user_site"].startswith(str(home / ".local" / "hpclab" / "josephson") + "/")
        curated = str(MAIN_VENV / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages")
        assert after["path"].index(curated) < after["path"].index(after["user_site"])  # the curated packages keep their versions
        _no_base_packages(after)
        assert _run(kc, f"import {WHEEL}; print({WHEEL}.WHO)").strip() == "installed with pip install --user"
        # pip check sees the venv and this kernel's user site, nothing of the base Python
        checked = _run(kc, "import subprocess, sys\nprint(subprocess.run([sys.executable, '-m', 'pip', 'check'], "
                           "capture_output=True, text=True).stdout)\nprint(subprocess.run([sys.executable, '-m', 'pip', "
                           "'list', '--user', '--format=freeze'], capture_output=True, text=True).stdout)")
        assert "No broken requirements found." in checked and "hpclab-user-site-probe==1.0" in checked, checked
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert not (home / ".local" / "lib").exists()  # nothing in the account's own user site
    for other in ("mri", "dl"):  # the same venv, and another venv
        km, kc = start_new_kernel(kernel_name=other, startup_timeout=120, env=env)
        try:
            seen = _probe(kc)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        assert seen["userbase"] == str(home / ".local" / "hpclab" / other)
        assert not seen["found"], (other, seen)
        _no_base_packages(seen)


def test_the_venv_itself_has_no_user_site_without_a_kernel_and_pip_says_so(setup):
    """The hub, the server and tools run from a curated venv read no ~/.local; `pip install --user` outside a kernel
    (no PYTHONUSERBASE) is refused instead of landing where no kernel looks."""
    env = _env(setup)
    code = "import site, sys; print(site.ENABLE_USER_SITE, any('.local' in p for p in sys.path))"
    out = subprocess.run([str(MAIN_VENV / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
    proc = subprocess.run([str(MAIN_VENV / "bin" / "python"), "-m", "pip", "install", "--user", "--no-index", "--find-links",
                           str(setup / "wheels"), "hpclab-user-site-probe"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "User site-packages are disabled" in proc.stderr, proc.stderr
    assert not (setup / "home" / ".local" / "lib").exists()


@pytest.mark.parametrize("venv", [MAIN_VENV, DL_VENV], ids=["venv", "venv-dl"])
def test_the_build_steps_set_up_every_curated_venv(venv):
    if venv == DL_VENV:
        require_dl_venv()
    assert problems(venv) == []  # make venv, make dl-env (images: install-kernel.sh, tests/platform/test_images.py)


def test_pyvenv_cfg_gets_the_system_site_setting_whatever_it_said():
    assert pyvenv_cfg("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n") == (
        "home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.11.2\n"
    )
    assert pyvenv_cfg("home = /usr/bin\n") == "home = /usr/bin\ninclude-system-site-packages = true\n"
