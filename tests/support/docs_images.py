"""Where a test saves a screenshot the user guide shows: docs/images with HPCLAB_DOCS_IMAGES=1, else the run's artifacts.

A plain test run leaves the tree clean; `HPCLAB_DOCS_IMAGES=1 pytest ...` remakes the guide's pictures.
"""

from __future__ import annotations

import os
from pathlib import Path

from support.paths import REPO_ROOT

DOCS_IMAGES = REPO_ROOT / "docs" / "images"


def docs_image(artifacts: Path, name: str) -> Path:
    """The path to save the guide's picture ``name`` at on this run."""
    folder = DOCS_IMAGES if os.environ.get("HPCLAB_DOCS_IMAGES") == "1" else artifacts / "docs-images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
