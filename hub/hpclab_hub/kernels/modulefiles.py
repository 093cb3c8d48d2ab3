"""Lmod modulefiles for the curated environments: ``module load mri`` gives a terminal, a notebook or a job script
the same Python and settings as the ``mri`` kernel.

``hpclab-hub kernels install`` writes ``<modules.curated>/<kernel>.lua`` for each kernel with a venv or conda runtime
(an Apptainer image has no prefix to put on PATH). The modulefile puts the runtime's bin folder first on PATH, sets
VIRTUAL_ENV (venv) or CONDA_PREFIX (conda), HPCLAB_ENVIRONMENT and PYTHONUSERBASE (the kernel's own user site), exports
the kernel's ``environment`` (``$VAR`` and a leading ``~`` expanded when the module loads) and turns its ``module load``
lines into Lmod's ``load``. The curated environments are one family: loading a second swaps the first out.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpclab_hub.config.model import Deployment, KernelEntry

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def lua_value(value: str) -> str:
    """A Lua expression for a YAML ``environment`` value: ``$VAR``/``${VAR}`` read when the module loads, ``~`` the home."""
    if value == "~" or value.startswith("~/"):
        value = "${HOME}" + value[1:]
    parts, last = [], 0
    for match in _VARIABLE.finditer(value):
        if match.start() > last:
            parts.append(lua_string(value[last : match.start()]))
        parts.append(f'(os.getenv({lua_string(match.group(1) or match.group(2))}) or "")')
        last = match.end()
    if last < len(value) or not parts:
        parts.append(lua_string(value[last:]))
    return " .. ".join(parts)


def modulefile(name: str, entry: KernelEntry) -> str | None:
    """The Lua modulefile of one curated kernel, or None where its runtime has no prefix (none, or an image)."""
    runtime = entry.runtime
    if runtime is None or runtime.prefix is None or runtime.type == "apptainer":
        return None
    prefix = str(runtime.prefix)
    lines = [
        f"-- HPCLab's curated environment {name!r}, written by `hpclab-hub kernels install` from the deploy YAML",
        "-- (edits here are overwritten at the next install: change the YAML's kernels instead)",
        f"whatis({lua_string(entry.display_name)})",
        f"help({lua_string(f'{entry.description} The Python of the {name!r} kernel: {prefix}/bin first on PATH.'.strip())})",
        'family("hpclab-environment")',
        f'setenv("HPCLAB_ENVIRONMENT", {lua_string(name)})',
        f"setenv({lua_string('CONDA_PREFIX' if runtime.type == 'conda' else 'VIRTUAL_ENV')}, {lua_string(prefix)})",
        f'prepend_path("PATH", {lua_string(prefix + "/bin")})',
        # the kernel's own user site (hpclab.kernel_launcher.user_base): `pip install --user` here lands in that kernel
        f'setenv("PYTHONUSERBASE", pathJoin(os.getenv("HOME") or "", {lua_string(".local/hpclab/" + name)}))',
    ]
    lines += [f"setenv({lua_string(key)}, {lua_value(value)})" for key, value in entry.environment.items()]
    for line in entry.modules:
        words = line.split()
        if words[:2] == ["module", "load"] and len(words) > 2:
            lines.append(f"load({', '.join(lua_string(word) for word in words[2:])})")
        else:
            lines.append(f"-- not carried over from the kernel's modules lines: {line}")
    return "\n".join(lines) + "\n"


def write_modulefiles(deployment: Deployment, names: list[str] | None = None) -> list[Path]:
    """Write the modulefiles of the YAML's curated kernels (``names`` only, if given) into ``modules.curated``."""
    folder = deployment.modules.curated
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    written = []
    for name, entry in deployment.kernels.items():
        text = modulefile(name, entry)
        if text is None or (names and name not in names):
            continue
        path = folder / f"{name}.lua"
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
        written.append(path)
    return written
