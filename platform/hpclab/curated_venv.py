"""``python -m hpclab.curated_venv VENV``: make a curated kernel's venv take ``pip install --user``, one user site per kernel.

A venv made by ``python -m venv`` refuses ``pip install --user`` ("User site-packages are not visible in this
virtualenv"): its pyvenv.cfg says ``include-system-site-packages = false``, which keeps the user site off sys.path and
makes pip refuse. The build steps (``make venv``, images/dl/install-dl-env.sh, images/base/install-kernel.sh) run this on
every curated venv, which then

- says ``include-system-site-packages = true`` in pyvenv.cfg (so site turns the user site on and pip accepts ``--user``);
- has ``hpclab_curated_site.py`` (a copy of :mod:`hpclab.curated_site`) and ``hpclab-curated-site.pth``, which calls it,
  in its site-packages: no site-packages of the base interpreter on sys.path, and the user site only where
  PYTHONUSERBASE names one (the kernel launcher sets ``~/.local/hpclab/<kernel>``).

Idempotent; ``--check`` says whether a venv is set up and changes nothing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: the hook's module name in the venv, and the .pth that runs it
MODULE = "hpclab_curated_site"
PTH = "hpclab-curated-site.pth"
PTH_LINE = f"import {MODULE}; {MODULE}.apply()\n"
_SETTING = re.compile(r"^\s*include-system-site-packages\s*=.*$", re.MULTILINE | re.IGNORECASE)


def site_packages(venv: Path) -> Path:
    """The venv's purelib folder, as its own Python says."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def pyvenv_cfg(text: str) -> str:
    """pyvenv.cfg's text with ``include-system-site-packages = true`` (added when missing)."""
    line = "include-system-site-packages = true"
    if _SETTING.search(text):
        return _SETTING.sub(line, text, count=1)
    return text.rstrip("\n") + ("\n" if text.strip() else "") + line + "\n"


def problems(venv: Path) -> list[str]:
    """What is not set up in ``venv`` yet ([] when it is)."""
    found = []
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file() or pyvenv_cfg(cfg.read_text(encoding="utf-8")) != cfg.read_text(encoding="utf-8"):
        found.append(f"{cfg}: include-system-site-packages is not true")
    site = site_packages(venv)
    source = Path(__file__).with_name("curated_site.py").read_text(encoding="utf-8")
    module = site / f"{MODULE}.py"
    if not module.is_file() or module.read_text(encoding="utf-8") != source:
        found.append(f"{module} is missing or out of date")
    pth = site / PTH
    if not pth.is_file() or pth.read_text(encoding="utf-8") != PTH_LINE:
        found.append(f"{pth} is missing or out of date")
    return found


def install(venv: Path) -> None:
    """Set ``venv`` up (see the module's docstring); the hook first, then pyvenv.cfg, so no start sees half of it."""
    site = site_packages(venv)
    shutil.copyfile(Path(__file__).with_name("curated_site.py"), site / f"{MODULE}.py")
    (site / PTH).write_text(PTH_LINE, encoding="utf-8")
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(pyvenv_cfg(cfg.read_text(encoding="utf-8")), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpclab.curated_venv", description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, help="the curated venv (its folder, with bin/python and pyvenv.cfg)")
    parser.add_argument("--check", action="store_true", help="say what is not set up, change nothing (exit 1 if anything)")
    args = parser.parse_args(argv)
    venv = args.venv.absolute()
    if not (venv / "bin" / "python").exists() or not (venv / "pyvenv.cfg").is_file():
        print(f"hpclab.curated_venv: {venv} is not a venv (no bin/python or pyvenv.cfg)", file=sys.stderr)
        return 2
    if args.check:
        found = problems(venv)
        print("\n".join(found) or f"{venv}: set up")
        return 1 if found else 0
    install(venv)
    print(f"hpclab.curated_venv: {venv}: pip install --user goes to $PYTHONUSERBASE (per kernel), no base site-packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
