"""Kernelspecs from the deploy YAML: ``hpclab-hub kernels install`` and ``hpclab-hub kernels list``.

Each kernel under ``kernels:`` that has a ``runtime`` becomes a Jupyter kernelspec whose argv runs
the one launcher, ``hpclab-kernel NAME --resource-dir {resource_dir} -f {connection_file}``
(hpclab.kernel_launcher). Its ``metadata.hpclab`` carries the runtime, environment and modules
lines the launcher reads, so the YAML stays the single source. The packaged folder
``templates/<name>/`` supplies the logo and the language defaults (a wheel install has them too).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpclab_hub.config.model import Deployment, KernelEntry

#: templates/<name>/ inside this package: kernel.json defaults and logos.
TEMPLATES = Path(__file__).with_name("templates")


def launcher_path() -> str:
    """Absolute path of ``hpclab-kernel`` (next to this Python, else on PATH)."""
    beside = Path(sys.executable).with_name("hpclab-kernel")
    if beside.exists():
        return str(beside)
    found = shutil.which("hpclab-kernel")
    if found is None:
        raise FileNotFoundError("hpclab-kernel is not installed (pip install -e . provides it)")
    return str(Path(found).resolve())


def render_spec(name: str, entry: KernelEntry, launcher: str, templates: Path = TEMPLATES) -> dict[str, Any]:
    """The kernel.json for one YAML kernel (template defaults, then the YAML's values)."""
    template = templates / name / "kernel.json"
    spec: dict[str, Any] = json.loads(template.read_text(encoding="utf-8")) if template.exists() else {}
    spec["argv"] = [launcher, name, "--resource-dir", "{resource_dir}", "-f", "{connection_file}"]
    spec["display_name"] = entry.display_name
    spec.setdefault("language", "python")
    spec.setdefault("interrupt_mode", "signal")
    metadata = dict(spec.get("metadata") or {})
    metadata.setdefault("debugger", True)
    metadata["hpclab"] = {
        "kernel": name,
        "description": entry.description,
        "runtime": entry.runtime.model_dump(mode="json", exclude_none=True) if entry.runtime else None,
        "environment": dict(entry.environment),
        "modules": list(entry.modules),
    }
    spec["metadata"] = metadata
    return spec


@dataclass(frozen=True)
class Installed:
    name: str
    path: Path


def install_kernels(
    deployment: Deployment,
    *,
    prefix: str | None = None,
    user: bool = False,
    names: list[str] | None = None,
    templates: Path = TEMPLATES,
) -> tuple[list[Installed], list[str]]:
    """Install the kernelspecs of every YAML kernel with a runtime; returns (installed, skipped names)."""
    from jupyter_client.kernelspec import KernelSpecManager

    launcher = launcher_path()
    manager = KernelSpecManager()
    installed: list[Installed] = []
    skipped: list[str] = []
    for name, entry in deployment.kernels.items():
        if names and name not in names:
            continue
        if entry.runtime is None:
            skipped.append(name)
            continue
        with tempfile.TemporaryDirectory(prefix=f"hpclab-kernel-{name}-") as tmp:
            source = Path(tmp) / name
            source.mkdir()
            if (templates / name).is_dir():
                for item in (templates / name).iterdir():
                    if item.is_file() and item.name != "kernel.json":
                        shutil.copy2(item, source / item.name)
            (source / "kernel.json").write_text(
                json.dumps(render_spec(name, entry, launcher, templates), indent=1) + "\n", encoding="utf-8"
            )
            path = manager.install_kernel_spec(
                str(source), kernel_name=name, user=user, prefix=None if user else (prefix or sys.prefix)
            )
        installed.append(Installed(name, Path(path)))
    return installed, skipped


def runtime_status(name: str, entry: KernelEntry) -> tuple[bool, str]:
    """(present, text): what the launcher would find on this machine right now."""
    from hpclab.kernel_launcher import KernelSettings, LaunchError, runtime_command

    if entry.runtime is None:
        return False, "no runtime declared"
    settings = KernelSettings(name=name, runtime=entry.runtime.model_dump(mode="json"))
    try:
        runtime_command(settings, str(Path(tempfile.gettempdir()) / "kernel-check.json"), dict(os.environ))
    except LaunchError as error:
        return False, str(error)
    return True, "present"


def runtime_text(entry: KernelEntry) -> str:
    runtime = entry.runtime
    if runtime is None:
        return "-"
    return f"{runtime.type} {runtime.image if runtime.type == 'apptainer' else runtime.prefix}"


def kernel_server_args(kernels: list[str], initial: str | None) -> list[str]:
    """Jupyter Server arguments that offer only a profile's ``kernels`` and start new notebooks in ``initial``.

    For a spawner's server arguments: ``kernel_server_args(profile.kernels, profile.initial_kernel)``.
    An empty ``kernels`` offers every installed kernel (the profile's documented meaning); the user's own kernels
    (``ipykernel install --user``) are offered beside a profile's (hpclab.kernel_specs).
    """
    args = [f"--KernelSpecManager.allowed_kernelspecs={name}" for name in kernels]
    if kernels:
        args.append("--ServerApp.kernel_spec_manager_class=hpclab.kernel_specs.ProfileKernelSpecManager")
    if initial:
        args.append(f"--MultiKernelManager.default_kernel_name={initial}")
    return args
