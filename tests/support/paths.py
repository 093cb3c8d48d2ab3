"""Where things are: the repository root, seen from the tests."""

from __future__ import annotations

from pathlib import Path

#: The repository's root folder.
REPO_ROOT = Path(__file__).resolve().parents[2]
