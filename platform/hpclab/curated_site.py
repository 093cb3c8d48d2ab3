"""What a curated venv runs at every start (its ``hpclab-curated-site.pth``): a per-kernel user site, no base packages.

:mod:`hpclab.curated_venv` copies this file into a curated venv's site-packages as ``hpclab_curated_site.py`` (its own
copy: it runs before any other path is set up) and writes the ``.pth`` line that calls :func:`apply`. site runs that line
while it adds the venv's own site-packages, which it does first, before the user site and the base interpreter's
prefixes; so :func:`apply` decides both:

- the base interpreter's prefixes leave ``site.PREFIXES``: its site-packages (Debian's /usr/lib/python3/dist-packages,
  /usr/local/lib/python3.X/dist-packages, a pyenv's site-packages) never reach sys.path, pip or ``pip check``, although
  pyvenv.cfg says ``include-system-site-packages = true`` (which pip's ``--user`` needs);
- the user site stays on only where ``PYTHONUSERBASE`` names one: the kernel launcher sets ~/.local/hpclab/<kernel>
  for each curated kernel, so one kernel's ``pip install --user`` is never seen by another, and the hub, the server
  and tools run from the venv never read the account's ~/.local. Without it ``pip install --user`` is refused
  ("User site-packages are disabled for this Python").

Standard library only, and nothing at import: the ``.pth`` line calls :func:`apply`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import ModuleType


def apply(site_module: ModuleType | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Drop the base prefixes from ``site.PREFIXES`` (in place) and leave the user site on only under PYTHONUSERBASE."""
    site = site_module if site_module is not None else sys.modules["site"]
    environ = os.environ if environ is None else environ
    if sys.prefix == sys.base_prefix:  # not running as a venv (a copied file, a base Python): change nothing
        return
    base = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    site.PREFIXES[:] = [prefix for prefix in site.PREFIXES if os.path.realpath(prefix) not in base]
    if not environ.get("PYTHONUSERBASE") and getattr(site, "ENABLE_USER_SITE", None) is None:
        setattr(site, "ENABLE_USER_SITE", False)  # noqa: B010  # (a ModuleType to mypy: site or a test's stand-in)
