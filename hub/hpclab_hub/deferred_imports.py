"""Import-time work the hub and the servers never need at start, deferred to its first use.

jsonschema, which JupyterHub and Jupyter Server load at start through jupyter_events, imports
``rfc3987_syntax`` only to check the "iri" and "iri-reference" formats, which none of Jupyter's
schemas uses; and ``rfc3987_syntax`` builds an Earley parser of RFC 3987's grammar when it is
imported: about 2 s of CPU on every start (docs/design/startup.md). The package stays installed
(``pip check`` stays honest) and works as before: a stand-in module answers the import, and the
first check loads the real one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from importlib.metadata import entry_points
from typing import Any

DEFERRED = "rfc3987_syntax"


class DeferredModule(types.ModuleType):
    """Stands in for a module until something uses it; then the real module is imported and used."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(load_real(self.__name__), name)


def load_real(name: str) -> types.ModuleType:
    """Import the real module ``name`` in place of its stand-in (put back if the import fails)."""
    stand_in = sys.modules.get(name)
    if stand_in is not None and not isinstance(stand_in, DeferredModule):
        return stand_in
    sys.modules.pop(name, None)
    try:
        return importlib.import_module(name)
    except BaseException:
        if stand_in is not None:
            sys.modules[name] = stand_in
        raise


def _is_valid_syntax(term: str, value: str) -> bool:
    """rfc3987_syntax.is_valid_syntax, loading the real module on the first call."""
    real: Any = load_real(DEFERRED)
    return bool(real.is_valid_syntax(term, value))


def defer_rfc3987_syntax() -> bool:
    """Put the stand-in in place, unless the module is already imported or not installed; True if it did."""
    if DEFERRED in sys.modules or importlib.util.find_spec(DEFERRED) is None:
        return False
    stand_in = DeferredModule(DEFERRED, "Stand-in for rfc3987_syntax: the real module loads on first use (hpclab).")
    stand_in.is_valid_syntax = _is_valid_syntax  # type: ignore[attr-defined]  # what jsonschema imports by name
    sys.modules[DEFERRED] = stand_in
    return True


def find_console_script(name: str) -> Any:
    """The entry point of this environment's console script ``name`` (e.g. ``jupyterhub-singleuser``), or None."""
    found = [point for point in entry_points(group="console_scripts") if point.name == name]
    return found[0] if found else None


def run_console_script(argv: list[str]) -> int:
    """Run the console script ``argv[0]`` of this environment (e.g. ``jupyterhub-singleuser``) with ``argv[1:]``,
    after deferring what it would import for nothing. Its argv[0] stays its own name, for logs and ``ps``."""
    name, *arguments = argv
    entry = find_console_script(name)
    if entry is None:
        print(f"hpclab: no console script {name!r} in this environment ({sys.prefix})", file=sys.stderr)
        return 127
    defer_rfc3987_syntax()
    sys.argv = [name, *arguments]
    result = entry.load()()
    return result if isinstance(result, int) else 0


def main() -> None:
    """``python -m hpclab_hub.deferred_imports PROGRAM [ARGS...]``."""
    if len(sys.argv) < 2:
        print("usage: python -m hpclab_hub.deferred_imports PROGRAM [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_console_script(sys.argv[1:]))


if __name__ == "__main__":
    main()
