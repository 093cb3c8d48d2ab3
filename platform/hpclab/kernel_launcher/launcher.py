"""The launcher behind every HPCLab kernelspec (see the package docstring)."""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..session import allocated_cores

#: Every variable that caps a threading runtime a kernel may load (PyTorch reads OMP/MKL).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
    "LOKY_MAX_CPU_COUNT",
)

_VARIABLE = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")

#: Seconds the `modules` lines may take (module systems on a busy shared file system are slow).
MODULES_TIMEOUT = 120


class LaunchError(Exception):
    """The kernel cannot start; the message is what the user reads in JupyterLab."""


@dataclass(frozen=True)
class KernelSettings:
    """What ``metadata.hpclab`` of an installed kernel.json says (written by ``hpclab-hub kernels install``)."""

    name: str
    runtime: dict[str, Any] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    resource_dir: Path | None = None

    @classmethod
    def from_kernel_json(cls, name: str, resource_dir: Path) -> KernelSettings:
        path = resource_dir / "kernel.json"
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LaunchError(f"cannot read the kernelspec {path}: {error}") from None
        meta = (spec.get("metadata") or {}).get("hpclab") or {}
        return cls(
            name=name,
            runtime=meta.get("runtime"),
            environment={str(k): str(v) for k, v in (meta.get("environment") or {}).items()},
            modules=[str(line) for line in meta.get("modules") or []],
            resource_dir=resource_dir,
        )

    @classmethod
    def find(cls, name: str) -> KernelSettings:
        """The settings of the installed kernelspec called ``name`` (Jupyter's search path)."""
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        try:
            resource_dir = Path(KernelSpecManager().get_kernel_spec(name).resource_dir)
        except NoSuchKernel:
            raise LaunchError(f"no kernelspec named {name!r} is installed") from None
        return cls.from_kernel_json(name, resource_dir)


# -- environment ---------------------------------------------------------------------------------
def allocation_threads(env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(threads, where from): ``hpclab.session.allocated_cores``, without session()'s memory and walltime
    probes (a kernel start must not wait for squeue)."""
    return allocated_cores(env)


def _run_modules(lines: list[str], env: dict[str, str]) -> dict[str, str]:
    """Run the `modules` lines in bash (stopping at the first failing one); return the environment they leave."""
    bash = shutil.which("bash", path=env.get("PATH")) or "/bin/bash"
    with tempfile.NamedTemporaryFile(prefix="hpclab-kernel-env-", delete=False) as handle:
        env_file = handle.name
    script = "set -e\nexec 1>&2\n" + "\n".join(lines) + '\nenv -0 > "$HPCLAB_KERNEL_ENV_FILE"\n'
    try:
        proc = subprocess.run(
            [bash, "-c", script],
            env={**env, "HPCLAB_KERNEL_ENV_FILE": env_file},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=MODULES_TIMEOUT,
        )
        if proc.returncode != 0:
            output = (proc.stderr or "").strip()[-2000:]
            raise LaunchError(
                f"a `modules` line failed (bash exit status {proc.returncode}):\n  "
                + "\n  ".join(lines)
                + (f"\n\nIts output:\n{output}" if output else "")
            )
        raw = Path(env_file).read_bytes().decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        raise LaunchError(f"the `modules` lines took longer than {MODULES_TIMEOUT} s:\n  " + "\n  ".join(lines)) from None
    finally:
        os.unlink(env_file)
    result: dict[str, str] = {}
    for entry in raw.split("\0"):
        key, sep, value = entry.partition("=")
        if sep and key not in ("_", "SHLVL", "HPCLAB_KERNEL_ENV_FILE"):
            result[key] = value
    if "SHLVL" in env:
        result["SHLVL"] = env["SHLVL"]
    return result


def kernel_environment(settings: KernelSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: allocation thread counts and its user site (:func:`user_base`), then site settings,
    then `modules` lines.

    A thread variable set in the kernel's ``environment`` wins over the allocation (an admin's
    choice); one inherited from the server or set by a module line does not.
    """
    env = dict(os.environ if base is None else base)
    threads, source = allocation_threads(env)
    computed = {name: str(threads) for name in THREAD_VARIABLES}
    env.update(computed)
    env["HPCLAB_KERNEL"] = settings.name
    env["HPCLAB_KERNEL_THREADS"] = str(threads)
    env["HPCLAB_KERNEL_THREADS_SOURCE"] = source
    env["PYTHONUSERBASE"] = user_base(settings.name, env)
    for key, value in settings.environment.items():
        env[key] = _expand(value, env)
    if settings.modules:
        env = _run_modules(settings.modules, env)
        env.update({k: v for k, v in computed.items() if k not in settings.environment})
    return env


def user_base(name: str, env: Mapping[str, str]) -> str:
    """The kernel's own PYTHONUSERBASE, ``~/.local/hpclab/<kernel>``: ``pip install --user`` in a curated kernel goes there
    (its venv takes it: hpclab.curated_venv), seen by that kernel only, never by another kernel or the account's ~/.local."""
    return str(Path(env.get("HOME") or os.path.expanduser("~")) / ".local" / "hpclab" / name)


def _expand(value: str, env: Mapping[str, str]) -> str:
    """``$VAR``/``${VAR}`` and a leading ``~`` expanded against ``env`` (unknown variables stay as written)."""
    expanded = _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)
    if expanded == "~" or expanded.startswith("~/"):
        expanded = env.get("HOME", "~") + expanded[1:]
    return expanded


# -- runtime -------------------------------------------------------------------------------------
def _has_ipykernel(prefix: Path, python: Path, env: Mapping[str, str]) -> bool:
    if glob.glob(str(prefix / "lib" / "python3*" / "site-packages" / "ipykernel_launcher.py")):
        return True
    # e.g. a venv made with --system-site-packages: ask its Python (rare, so the cost is fine)
    proc = subprocess.run(
        [str(python), "-c", "import ipykernel_launcher"],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    return proc.returncode == 0


def runtime_command(settings: KernelSettings, connection_file: str, env: dict[str, str]) -> list[str]:
    """The command that starts ipykernel in the kernel's runtime; adjusts ``env`` (PATH, VIRTUAL_ENV).

    Raises LaunchError, with the message the user will read, when the runtime is not there.
    """
    runtime = settings.runtime
    if not runtime:
        raise LaunchError(
            "this kernelspec declares no runtime. Install HPCLab kernels with `hpclab-hub kernels install`, "
            "which writes the runtime from the deploy YAML into kernel.json."
        )
    kind = runtime.get("type")
    if kind in ("venv", "conda"):
        prefix = Path(str(runtime.get("prefix") or ""))
        python = prefix / "bin" / "python"
        if not str(runtime.get("prefix") or "") or not prefix.is_dir():
            raise LaunchError(f"its {kind} runtime {prefix} does not exist (was it built, or moved?).")
        if not os.access(python, os.X_OK):
            raise LaunchError(f"its {kind} runtime {prefix} has no {python}.")
        if not _has_ipykernel(prefix, python, env):
            raise LaunchError(f"ipykernel is not installed in its {kind} runtime {prefix}: {python} -m pip install ipykernel")
        env["PATH"] = f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["CONDA_PREFIX" if kind == "conda" else "VIRTUAL_ENV"] = str(prefix)
        env.pop("PYTHONHOME", None)
        return [str(python), "-m", "ipykernel_launcher", "-f", connection_file]
    if kind == "apptainer":
        image = Path(str(runtime.get("image") or ""))
        command = str(runtime.get("apptainer") or "apptainer")
        apptainer = shutil.which(command, path=env.get("PATH"))
        if apptainer is None:
            raise LaunchError(f"its Apptainer runtime needs `{command}`, which is not on PATH on {os.uname().nodename}.")
        if not str(runtime.get("image") or "") or not image.is_file():
            raise LaunchError(f"its Apptainer image {image} does not exist (was it built, or moved?).")
        options = [str(o) for o in runtime.get("options", ["--nv"])]
        conn_dir = str(Path(connection_file).resolve().parent)
        home = env.get("HOME", "")
        if not (conn_dir.startswith("/tmp/") or (home and conn_dir.startswith(home.rstrip("/") + "/"))):
            options += ["--bind", conn_dir]  # apptainer binds $HOME and /tmp itself
        image_python = str(runtime.get("python") or "python")
        return [apptainer, "exec", *options, str(image), image_python, "-m", "ipykernel_launcher", "-f", connection_file]
    raise LaunchError(f"unknown runtime type {kind!r} (known: venv, conda, apptainer).")


# -- entry point ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpclab-kernel", description="Start an HPCLab kernel in its runtime.")
    parser.add_argument("name", help="kernel name (as under `kernels:` in the deploy YAML)")
    parser.add_argument("-f", "--connection-file", required=True, dest="connection_file")
    parser.add_argument(
        "--resource-dir",
        type=Path,
        default=None,
        help="the kernelspec's folder (kernel.json: {resource_dir}); default: look the name up",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command and thread settings, start nothing")
    return parser


def _fail(name: str, reason: str, connection_file: str) -> int:
    from .error_kernel import start_error_kernel

    message = (
        f"The HPCLab kernel '{name}' cannot start: {reason}\n\n"
        "Nothing you run in this kernel will execute. Choose another kernel (Kernel > Change Kernel), "
        "or ask your HPCLab admin (`hpclab-hub kernels list` shows which runtimes are present)."
    )
    return start_error_kernel(message, connection_file)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.resource_dir is not None:
            settings = KernelSettings.from_kernel_json(args.name, args.resource_dir)
        else:
            settings = KernelSettings.find(args.name)
        env = kernel_environment(settings)
        command = runtime_command(settings, args.connection_file, env)
    except LaunchError as error:
        if args.dry_run:
            print(f"hpclab-kernel {args.name}: {error}", file=sys.stderr)
            return 1
        return _fail(args.name, str(error), args.connection_file)
    summary = (
        f"hpclab-kernel {args.name}: threads={env['HPCLAB_KERNEL_THREADS']} "
        f"({env['HPCLAB_KERNEL_THREADS_SOURCE']}), GPUs {env.get('CUDA_VISIBLE_DEVICES') or 'none'}: " + " ".join(command)
    )
    print(summary, file=sys.stderr, flush=True)
    if args.dry_run:
        print(json.dumps({"command": command, "threads": {k: env[k] for k in THREAD_VARIABLES}}))
        return 0
    try:
        os.execve(command[0], command, env)
    except OSError as error:  # e.g. an interpreter that is not executable on this node
        return _fail(args.name, f"{command[0]} could not be executed: {error}", args.connection_file)
