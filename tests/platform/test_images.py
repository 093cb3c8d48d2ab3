"""Kernel images from one pin set: Dockerfiles lint clean, Apptainer definitions parse, locks match
pyproject's extras and install.

No container engine runs here, so what proves an image is: hadolint on its Dockerfile, a parse of its
Apptainer definition (header, known sections, files that exist, shell that parses), and its lock file
installed into a fresh venv by the same script the images run (images/base/install-kernel.sh) with
its kernel's imports. The dl lock is not installed here (several GB of CUDA wheels and a Horovod
build): the deep-learning venv .venv-dl carries its torch/torchvision pins, checked below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support.dltools import DL_PYTHON, require_dl_venv
from support.paths import REPO_ROOT


REPO = REPO_ROOT
IMAGES = REPO / "images"
LOCKS = IMAGES / "requirements"
BIN = Path(sys.executable).parent
KERNELS = ("mri", "josephson", "dl")
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
DEFINITIONS = sorted(IMAGES.glob("*/*.def"))

# what each lock must import once installed (hpclab, hpclab.kernel_launcher and ipykernel always)
LOCK_IMPORTS = {
    "mri": "import nibabel, dcm2niix, pydicom, SimpleITK, nilearn, hpclab.mri",
    "josephson": "import scipy, joblib, numba, dask, distributed, hpclab.josephson",
}


def _lock(kernel: str) -> dict[str, str]:
    """name -> pinned version, from images/requirements/<kernel>.txt (asserting every line is pinned and hashed)."""
    text = (LOCKS / f"{kernel}.txt").read_text(encoding="utf-8")
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = block.split("\n", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^ ;\\]+)( ;[^\\]*)? \\", first)
        assert match, f"{kernel}.txt: not an exact pin: {first!r}"
        assert "--hash=sha256:" in block, f"{kernel}.txt: {first} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


def test_every_kernel_has_a_dockerfile_a_definition_and_a_lock():
    for kernel in KERNELS:
        assert (IMAGES / kernel / "Dockerfile").is_file()
        assert (IMAGES / kernel / f"{kernel}.def").is_file()
        assert (LOCKS / f"{kernel}.txt").is_file()
    assert (IMAGES / "base" / "Dockerfile").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile):
    proc = subprocess.run([str(BIN / "hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_dockerfile_builds_from_the_base_and_installs_its_lock(kernel):
    text = (IMAGES / kernel / "Dockerfile").read_text()
    assert re.search(r"^FROM hpclab-base:\S+$", text, re.M)
    assert f"install-kernel.sh /opt/hpclab/images/requirements/{kernel}.txt" in text
    base = (IMAGES / "base" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+) ", base + "\n" + text, re.M):
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"


# -- Apptainer definitions ------------------------------------------------------------------------------
BOOTSTRAP_AGENTS = {"docker", "docker-daemon", "docker-archive", "library", "localimage", "oras", "shub",
                    "debootstrap", "yum", "zypper", "busybox", "scratch"}
SECTIONS = {"setup", "files", "environment", "post", "runscript", "startscript", "test", "labels", "help", "arguments"}
SCRIPT_SECTIONS = {"setup", "environment", "post", "runscript", "startscript", "test"}


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header, sections) of an Apptainer definition file; raises ValueError on what apptainer rejects."""
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current: str | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("%"):
            if current is not None:
                sections[current] = "\n".join(body)
            name = line[1:].split()[0] if line[1:].split() else ""
            if name not in SECTIONS:
                raise ValueError(f"line {number}: unknown section %{name}")
            if name in sections:
                raise ValueError(f"line {number}: section %{name} appears twice")
            current, body = name, []
        elif current is not None:
            body.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"line {number}: header lines are `Key: value`, got {line!r}")
            if key.strip().lower() in header:
                raise ValueError(f"line {number}: header {key.strip()} given twice")
            header[key.strip().lower()] = value.strip()
    if current is not None:
        sections[current] = "\n".join(body)
    if header.get("bootstrap") not in BOOTSTRAP_AGENTS:
        raise ValueError(f"Bootstrap must be one of {sorted(BOOTSTRAP_AGENTS)}, got {header.get('bootstrap')!r}")
    if header["bootstrap"] in ("docker", "docker-daemon", "library", "localimage", "oras", "shub") and "from" not in header:
        raise ValueError(f"Bootstrap {header['bootstrap']} needs From:")
    return header, sections


def test_the_definition_parser_rejects_what_apptainer_rejects():
    with pytest.raises(ValueError, match="unknown section %pots"):
        parse_definition("Bootstrap: docker\nFrom: debian:12\n%pots\n  true\n")
    with pytest.raises(ValueError, match="needs From"):
        parse_definition("Bootstrap: docker\n%post\n  true\n")
    with pytest.raises(ValueError, match="Bootstrap must be"):
        parse_definition("From: debian:12\n%post\n  true\n")
    with pytest.raises(ValueError, match="appears twice"):
        parse_definition("Bootstrap: docker\nFrom: debian:12\n%post\n  true\n%post\n  false\n")


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda p: p.name)
def test_apptainer_definition_parses(definition):
    kernel = definition.stem
    header, sections = parse_definition(definition.read_text())
    assert header["bootstrap"] == "docker" and header["from"] == "python:3.11.7-slim-bookworm"
    base = (IMAGES / "base" / "Dockerfile").read_text()
    assert f"FROM {header['from']}" in base  # the Docker and Apptainer images start from the same Python
    for line in sections["files"].splitlines():
        if line.strip() and not line.strip().startswith("#"):
            source = line.split()[0]
            assert (REPO / source).exists(), f"%files {source}: not in the repository"
    for name in SCRIPT_SECTIONS & set(sections):
        proc = subprocess.run(["bash", "-n"], input=sections[name], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"%{name}: {proc.stderr}"
    assert f"install-kernel.sh /opt/hpclab/images/requirements/{kernel}.txt" in sections["post"]
    assert "/opt/venv/bin" in sections["environment"]


# -- lock files --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", KERNELS)
def test_lock_is_pinned_hashed_and_satisfies_its_pyproject_extra(kernel):
    pins = _lock(kernel)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + project["optional-dependencies"][kernel]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{kernel}.txt lacks {name} (pyproject changed: run images/requirements/compile.sh {kernel})"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{kernel}.txt pins {name}=={pins[name]}, pyproject asks {requirement} (run images/requirements/compile.sh {kernel})"


def _torch_pins() -> dict[str, str]:
    """images/torch.txt, the one torch pin: {"torch", "torchvision"} (deep learning) and "cpu" (brain extraction)."""
    text = (IMAGES / "torch.txt").read_text()
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)$", text, re.M))
    pins["cpu"] = re.search(r"^# cpu: torch==(\S+)$", text, re.M).group(1)
    return pins


def test_torch_is_pinned_in_one_file_that_the_scripts_and_dl_in_read():
    pins = _torch_pins()
    assert set(pins) == {"torch", "torchvision", "cpu"}
    assert "-r ../torch.txt" in (LOCKS / "dl.in").read_text().splitlines()
    for script in (IMAGES / "dl" / "install-dl-env.sh", IMAGES / "mri" / "install-bet.sh"):
        text = script.read_text()
        assert "images/torch.txt" in text and not re.search(r"^TORCH(VISION)?_VERSION=[0-9]", text, re.M), script
    for recipe in ("dl/Dockerfile", "dl/dl.def", "mri/Dockerfile", "mri/mri.def"):
        text = (IMAGES / recipe).read_text()
        assert "images/torch.txt" in text, recipe  # the scripts read it inside the image too
        written = [version for version in set(pins.values()) if version in text]
        assert not written, f"{recipe} writes torch's version again ({written}): read images/torch.txt instead"


def test_dl_lock_pins_the_torch_of_the_dl_env_script_and_of_venv_dl():
    pins = _lock("dl")
    torch, torchvision = _torch_pins()["torch"], _torch_pins()["torchvision"]
    assert (pins["torch"], pins["torchvision"]) == (torch, torchvision)
    require_dl_venv()
    proc = subprocess.run([str(DL_PYTHON), "-c", "from importlib.metadata import version as v; print(v('torch'), v('torchvision'))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == [torch, torchvision], proc.stderr


def test_brain_extraction_lock_has_no_torch_agrees_with_all_txt_and_venv_has_the_cpu_torch():
    """mri-bet.txt: deepbet and its small deps, hashed; torch pinned by install-bet.sh, a CPU build."""
    pins = _lock("mri-bet")
    assert "deepbet" in pins and "torch" not in pins and not any(n.startswith("nvidia") for n in pins)
    shared = set(pins) & set(_lock("all"))
    assert {n: pins[n] for n in shared} == {n: _lock("all")[n] for n in shared}
    torch_pin = _torch_pins()["cpu"]
    proc = subprocess.run([str(BIN / "python"), "-c", "import torch, deepbet; print(torch.__version__, torch.version.cuda)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == [f"{torch_pin}+cpu", "None"], proc.stderr
    for recipe in (IMAGES / "mri" / "Dockerfile", IMAGES / "mri" / "mri.def"):
        assert "install-bet.sh" in recipe.read_text() and "download.pytorch.org/whl/cpu" in recipe.read_text()


@pytest.mark.slow  # a fresh venv from each lock: 20-30 s each
@pytest.mark.timeout(400)
@pytest.mark.parametrize("kernel", sorted(LOCK_IMPORTS))
def test_lock_installs_into_a_fresh_venv_and_imports_its_kernel(kernel, tmp_path):
    """What the image build runs (install-kernel.sh), with uv so it hits uv's cache."""
    env = {**os.environ, "UV": str(BIN / "uv")}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["bash", str(IMAGES / "base" / "install-kernel.sh"), str(LOCKS / f"{kernel}.txt"), LOCK_IMPORTS[kernel],
         str(tmp_path / "venv")],
        capture_output=True, text=True, timeout=380, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "imports OK" in proc.stdout
    # pip install --user in the image's kernel: one user site per kernel, no base site-packages (docs/kernels.md)
    venv_python = str(tmp_path / "venv" / "bin" / "python")
    checked = subprocess.run([venv_python, "-m", "hpclab.curated_venv", "--check", str(tmp_path / "venv")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # exactly the lock: nothing else in the venv but hpclab itself (and the venv's own pip)
    listed = subprocess.run([str(BIN / "uv"), "pip", "freeze", "--python", str(tmp_path / "venv" / "bin" / "python")],
                            capture_output=True, text=True, timeout=60)
    installed = {canonicalize_name(line.split("==")[0].split(" @ ")[0]) for line in listed.stdout.splitlines() if line}
    assert installed - {"hpclab", "pip", "setuptools"} == set(_lock(kernel)), installed ^ set(_lock(kernel))
