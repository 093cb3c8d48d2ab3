"""Curated kernels: `hpclab-hub kernels install/list`, and the `hpclab-kernel` launcher driven through jupyter_client.

Every kernel here is installed into a temporary prefix with the real CLI and started the way
JupyterLab starts it (jupyter_client: kernel.json argv -> hpclab-kernel -> exec ipykernel).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel

from support.dltools import DL_VENV, require_dl_venv
from support.paths import REPO_ROOT


REPO = REPO_ROOT
BIN = Path(sys.executable).parent
HUB_CLI = BIN / "hpclab-hub"
MAIN_VENV = Path(sys.prefix)

# What each curated kernel must import (issue 7): hpclab plus its stack's key modules.
KEY_IMPORTS = {
    "josephson": "import hpclab, hpclab.josephson, scipy, joblib, numba",
    "mri": "import hpclab, hpclab.mri, nibabel, dcm2niix",
    "dl": "import hpclab, torch, horovod.torch",
}


def _yaml(tmp: Path, fake_image: Path) -> str:
    return f"""\
backends:
  local: {{type: local}}
profiles:
  - {{slug: small, display_name: Small, backend: local, kernels: [josephson, mri]}}
  - {{slug: gpu, display_name: GPU, backend: local, gpus: 1, kernels: [dl, josephson], default_kernel: dl}}
kernels:
  josephson:
    display_name: Josephson
    runtime: {{type: venv, prefix: {MAIN_VENV}}}
  mri:
    display_name: MRI
    runtime: {{type: venv, prefix: {MAIN_VENV}}}
  dl:
    display_name: Deep learning
    runtime: {{type: venv, prefix: {DL_VENV}}}
  site:
    display_name: Site settings
    runtime: {{type: venv, prefix: {MAIN_VENV}}}
    environment:
      FREESURFER_HOME: /opt/freesurfer-7.4
      SUBJECTS_DIR: $FREESURFER_HOME/subjects
    modules:
      - export HPCLAB_TEST_MODULE=loaded
      - export OMP_NUM_THREADS=64   # a module must not undo the allocation's thread count
  container:
    display_name: Container
    runtime: {{type: apptainer, image: {fake_image}, python: {sys.executable}}}
  gone:
    display_name: Missing venv
    runtime: {{type: venv, prefix: {tmp / 'no-such-venv'}}}
  gone-image:
    display_name: Missing image
    runtime: {{type: apptainer, image: {tmp / 'no-such.sif'}}}
  bad-module:
    display_name: Failing module line
    runtime: {{type: venv, prefix: {MAIN_VENV}}}
    modules: ["echo 'Lmod has detected the following error: unknown module freesurfer/99' >&2; false"]
  declared-only:
    display_name: Declared without a runtime
"""

# A stand-in for `apptainer exec [OPTIONS] IMAGE CMD...` (no container engine here): it records
# its arguments, refuses a missing image as apptainer does, and runs CMD on the host.
FAKE_APPTAINER = """\
#!/bin/sh
printf '%s\\n' "$@" > "$HPCLAB_FAKE_APPTAINER_LOG"
[ "$1" = exec ] || exit 2
shift
while :; do
  case "$1" in
    --bind|-B) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ -f "$1" ] || { echo "FATAL: could not open image $1" >&2; exit 255; }
shift
exec "$@"
"""


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test YAML's kernels, installed by `hpclab-hub kernels install --prefix`; JUPYTER_PATH points there."""
    tmp = tmp_path_factory.mktemp("kernels")
    image = tmp / "container.sif"
    image.write_bytes(b"not a real image: the fake apptainer only checks that it exists")
    fake_bin = tmp / "bin"
    fake_bin.mkdir()
    (fake_bin / "apptainer").write_text(FAKE_APPTAINER)
    (fake_bin / "apptainer").chmod(0o755)
    config = tmp / "hub.yaml"
    config.write_text(_yaml(tmp, image))
    proc = subprocess.run([str(HUB_CLI), "kernels", "install", "--config", str(config), "--prefix", str(tmp / "prefix")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipped declared-only: no runtime declared" in proc.stdout
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "PATH", "HPCLAB_FAKE_APPTAINER_LOG")}
    os.environ["JUPYTER_PATH"] = str(tmp / "prefix" / "share" / "jupyter")
    os.environ["PATH"] = f"{fake_bin}{os.pathsep}{os.environ['PATH']}"
    os.environ["HPCLAB_FAKE_APPTAINER_LOG"] = str(tmp / "apptainer-args.txt")
    try:
        yield tmp
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def kernel(name: str, *, cpus: set[int] | None = None, env: dict[str, str | None] | None = None):
    """A kernel started through jupyter_client (as JupyterLab does), optionally on fewer CPUs (affinity)."""
    kernel_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            kernel_env.pop(key, None)
        else:
            kernel_env[key] = value
    saved = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)  # the kernel process inherits it
    try:
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=120, env=kernel_env)
    finally:
        os.sched_setaffinity(0, saved)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 120) -> tuple[dict, str, list[dict]]:
    """Execute ``code``; return (reply content, stdout text, error contents)."""
    out: list[str] = []
    errors: list[dict] = []

    def hook(msg: dict) -> None:
        kind = msg["header"]["msg_type"]
        if kind == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif kind == "error":
            errors.append(msg["content"])

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"], "".join(out), errors


def report(kc, name: str) -> dict:
    """Thread settings as the kernel sees them: env, threadpoolctl (BLAS/OpenMP), numba, torch."""
    code = "\n".join([
        "import json, os, threadpoolctl, numpy",
        "r = {'env': {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS',",
        "     'HPCLAB_KERNEL', 'HPCLAB_KERNEL_THREADS_SOURCE', 'CUDA_VISIBLE_DEVICES', 'VIRTUAL_ENV')},",
        "     'pools': [(p['internal_api'], p['num_threads']) for p in threadpoolctl.threadpool_info()]}",
        "if os.environ['HPCLAB_KERNEL'] == 'dl':",
        "    import torch; r['torch'] = torch.get_num_threads()",
        "if os.environ['HPCLAB_KERNEL'] == 'josephson':",
        "    import numba; r['numba'] = numba.config.NUMBA_NUM_THREADS",
        "print(json.dumps(r))",
    ])
    reply, out, errors = run(kc, code)
    assert reply["status"] == "ok", errors
    result = json.loads(out.strip().splitlines()[-1])
    assert result["env"]["HPCLAB_KERNEL"] == name
    return result


def _needs(name: str) -> None:
    if name == "dl":
        require_dl_venv()  # a failure, not a skip: `make test` builds .venv-dl


# -- the shipped YAML: install, jupyter kernelspec list, hpclab-hub kernels list -------------------
def test_shipped_kernels_install_into_a_prefix_and_jupyter_lists_them(tmp_path):
    proc = subprocess.run([str(HUB_CLI), "kernels", "install", "--prefix", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for name in ("josephson", "mri", "dl"):
        assert f"installed {name} -> {tmp_path}/share/jupyter/kernels/{name}" in proc.stdout
        spec = json.loads((tmp_path / "share/jupyter/kernels" / name / "kernel.json").read_text())
        assert spec["argv"] == [str(BIN / "hpclab-kernel"), name, "--resource-dir", "{resource_dir}", "-f", "{connection_file}"]
        assert spec["metadata"]["hpclab"]["runtime"]["type"] == "venv"
        assert (tmp_path / "share/jupyter/kernels" / name / "logo-64x64.png").stat().st_size > 100
    listed = subprocess.run([str(BIN / "jupyter"), "kernelspec", "list", "--json"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "JUPYTER_PATH": str(tmp_path / "share" / "jupyter")})
    specs = json.loads(listed.stdout)["kernelspecs"]
    for name in ("josephson", "mri", "dl"):
        assert specs[name]["resource_dir"] == str(tmp_path / "share/jupyter/kernels" / name)
        assert specs[name]["spec"]["display_name"]

    table = subprocess.run([str(HUB_CLI), "kernels", "list", "--prefix", str(tmp_path)], capture_output=True, text=True,
                           timeout=120, cwd=REPO)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:4]}
    assert rows["josephson"][1:4] == ["venv", str(MAIN_VENV), "yes"]
    assert rows["mri"][1:4] == ["venv", str(MAIN_VENV), "yes"]
    assert rows["dl"][2] == str(REPO / ".venv-dl")
    assert rows["mri"][4] == str(tmp_path / "share/jupyter/kernels/mri")


def test_kernels_list_says_why_a_runtime_is_not_present(prefix):
    table = subprocess.run([str(HUB_CLI), "kernels", "list", "--config", str(prefix / "hub.yaml")],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert f"gone: its venv runtime {prefix / 'no-such-venv'} does not exist" in table.stdout
    assert f"gone-image: its Apptainer image {prefix / 'no-such.sif'} does not exist" in table.stdout
    assert "declared-only: no runtime declared" in table.stdout


# -- (i) thread counts follow the allocation ----------------------------------------------------------
@pytest.mark.parametrize("name", ["josephson", "mri", "dl"])
def test_one_cpu_of_affinity_gives_one_thread(prefix, name):
    _needs(name)
    with kernel(name, cpus={min(os.sched_getaffinity(0))}, env={"SLURM_CPUS_PER_TASK": None}) as (_, kc):
        r = report(kc, name)
    assert r["env"]["OMP_NUM_THREADS"] == r["env"]["MKL_NUM_THREADS"] == r["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert r["env"]["HPCLAB_KERNEL_THREADS_SOURCE"] == "affinity"
    assert r["pools"] and all(n == 1 for _, n in r["pools"]), r["pools"]
    assert r.get("torch", 1) == 1 and r.get("numba", 1) == 1


@pytest.mark.parametrize("name", ["josephson", "mri", "dl"])
def test_slurm_cpus_per_task_wins_over_a_bigger_affinity_and_key_imports_work(prefix, name):
    _needs(name)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs an affinity of at least 2 CPUs to be bigger than SLURM_CPUS_PER_TASK=1")
    with kernel(name, env={"SLURM_CPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "3"}) as (_, kc):
        r = report(kc, name)
        reply, out, errors = run(kc, KEY_IMPORTS[name] + "\nimport shutil, sys\nprint(sys.prefix, shutil.which('python'))")
    assert r["env"]["HPCLAB_KERNEL_THREADS_SOURCE"] == "SLURM_CPUS_PER_TASK"
    assert r["env"]["OMP_NUM_THREADS"] == "1" and r["env"]["CUDA_VISIBLE_DEVICES"] == "3"
    assert r["pools"] and all(n == 1 for _, n in r["pools"]), r["pools"]
    assert r.get("torch", 1) == 1 and r.get("numba", 1) == 1
    assert reply["status"] == "ok", errors
    venv = DL_VENV if name == "dl" else MAIN_VENV
    assert out.split() == [str(venv), str(venv / "bin" / "python")]  # its runtime, first on PATH


def test_mri_kernel_runs_dcm2niix_from_its_runtime(prefix):
    with kernel("mri") as (_, kc):
        reply, out, errors = run(kc, "import subprocess\nprint(subprocess.run(['dcm2niix', '-v'], capture_output=True, text=True).stdout)")
    assert reply["status"] == "ok", errors
    assert "dcm2niiX version" in out


# -- site settings, modules, apptainer ---------------------------------------------------------------
def test_site_environment_and_module_lines_reach_the_kernel_but_not_its_thread_count(prefix):
    with kernel("site", cpus={min(os.sched_getaffinity(0))}) as (_, kc):
        reply, out, errors = run(kc, "import os\nfor k in ('FREESURFER_HOME', 'SUBJECTS_DIR', 'HPCLAB_TEST_MODULE', "
                                     "'OMP_NUM_THREADS'): print(os.environ.get(k))")
    assert reply["status"] == "ok", errors
    assert out.split() == ["/opt/freesurfer-7.4", "/opt/freesurfer-7.4/subjects", "loaded", "1"]


def test_apptainer_runtime_execs_ipykernel_inside_the_image_with_nv(prefix):
    with kernel("container", env={"SLURM_CPUS_PER_TASK": "1"}) as (km, kc):
        reply, out, errors = run(kc, "import os\nprint(os.environ['HPCLAB_KERNEL'], os.environ['OMP_NUM_THREADS'])")
    assert reply["status"] == "ok", errors
    assert out.split() == ["container", "1"]
    args = (prefix / "apptainer-args.txt").read_text().splitlines()
    image = str(prefix / "container.sif")
    assert args[:2] == ["exec", "--nv"] and image in args
    assert args[args.index(image) + 1:args.index(image) + 4] == [sys.executable, "-m", "ipykernel_launcher"]


# -- (iii) a kernel that cannot start says why, in the notebook ------------------------------------------
@pytest.mark.parametrize(("name", "reason"), [
    ("gone", "its venv runtime {tmp}/no-such-venv does not exist"),
    ("gone-image", "its Apptainer image {tmp}/no-such.sif does not exist"),
    ("bad-module", "a `modules` line failed (bash exit status 1)"),
])
def test_kernel_whose_runtime_is_missing_shows_a_readable_error_instead_of_dying(prefix, name, reason):
    reason = reason.format(tmp=prefix)
    with kernel(name) as (km, kc):
        info = kc.kernel_info(reply=True, timeout=30)["content"]
        assert reason in info["banner"]
        for _ in range(2):  # every cell, not just the first
            reply, _out, errors = run(kc, "print('never runs')")
            assert reply["status"] == "error" and reason in reply["evalue"]
            assert len(errors) == 1 and errors[0]["ename"] == "KernelNotAvailable"
            assert f"The HPCLab kernel '{name}' cannot start: {reason}" in errors[0]["evalue"]
        assert km.is_alive()  # no restart loop
    if name == "bad-module":
        assert "unknown module freesurfer/99" in reply["evalue"]  # the module system's own words


def test_committed_kernelspec_installed_by_hand_explains_how_to_install_it(tmp_path, prefix):
    KernelSpecManager().install_kernel_spec(str(REPO / "hub/hpclab_hub/kernels/templates" / "mri"), "raw-mri", prefix=str(tmp_path))
    path = os.environ["JUPYTER_PATH"]
    os.environ["JUPYTER_PATH"] = str(tmp_path / "share" / "jupyter")
    try:
        with kernel("raw-mri", env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}) as (_, kc):
            reply, _out, _errors = run(kc, "1")
    finally:
        os.environ["JUPYTER_PATH"] = path
    assert reply["status"] == "error" and "hpclab-hub kernels install" in reply["evalue"]


# -- the YAML ---------------------------------------------------------------------------------------------
def test_gpu_profile_of_the_shipped_yaml_defaults_to_dl():
    from hpclab_hub.config import load_deployment

    deployment = load_deployment(REPO / "deploy" / "hub.yaml")
    assert {"josephson", "mri", "dl"} <= set(deployment.kernels)
    for profile in deployment.profiles:
        assert profile.initial_kernel == ("dl" if profile.gpus else "josephson"), profile.slug


def test_runtime_needs_its_path_and_default_kernel_must_be_offered(tmp_path):
    from hpclab_hub.config import ConfigError, parse_deployment

    text = """\
backends: {local: {type: local}}
profiles:
  - {slug: a, display_name: A, backend: local, kernels: [x], default_kernel: y}
kernels:
  x: {display_name: X, runtime: {type: venv}}
  y: {display_name: Y, runtime: {type: apptainer}}
"""
    with pytest.raises(ConfigError) as caught:
        parse_deployment(text, tmp_path)
    issues = "\n".join(map(str, caught.value.issues))
    assert "a venv runtime needs `prefix`" in issues and "an apptainer runtime needs `image`" in issues
    fixed = text.replace("{type: venv}", "{type: venv, prefix: env}").replace("{type: apptainer}", "{type: apptainer, image: y.sif}")
    with pytest.raises(ConfigError) as caught:
        parse_deployment(fixed, tmp_path)
    assert "profiles[0].default_kernel: 'y' is not among this profile's kernels: x" in str(caught.value.issues[0])
    deployment = parse_deployment(fixed.replace("default_kernel: y", "default_kernel: x"), tmp_path)
    assert deployment.kernels["x"].runtime.prefix == tmp_path / "env"  # relative to the YAML's folder


def test_profile_kernels_become_jupyter_server_arguments_it_accepts():
    from jupyter_server.serverapp import ServerApp

    from hpclab_hub.config import load_deployment
    from hpclab_hub.kernels import kernel_server_args

    gpu = load_deployment(REPO / "deploy" / "hub.yaml").profile("gpu-1")
    app = ServerApp()
    app.parse_command_line(kernel_server_args(gpu.kernels, gpu.initial_kernel))
    assert app.config.KernelSpecManager.allowed_kernelspecs == {"dl", "josephson", "mri"}
    assert app.config.MultiKernelManager.default_kernel_name == "dl"
    assert kernel_server_args([], None) == []  # no list: every installed kernel, Jupyter's default
