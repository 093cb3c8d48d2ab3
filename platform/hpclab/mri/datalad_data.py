"""Cohorts in DataLad datasets: subjects found before their content is there, then fetched one by one.

A clone of a large dataset (OpenNeuro, a lab's archive) holds every file as a git-annex link whose
content is elsewhere. ``hpclab mri cohort`` lists subjects from the dataset's tree, then ``datalad
get``s only the subjects it processes, so a cohort of three subjects from a 1,000-subject dataset
fetches three. Run it under ``datalad run`` and each result records its inputs and command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import MRIError


def is_dataset(root: str | Path) -> bool:
    """True when ``root`` is the top of a DataLad dataset (it has a ``.datalad`` folder)."""
    return (Path(root) / ".datalad").is_dir()


def has_entries(folder: Path) -> bool:
    """True when ``folder`` holds any file, present or not yet fetched (an annex link whose content is away)."""
    return any(p.is_file() or p.is_symlink() for p in folder.rglob("*") if ".git" not in p.parts)


def fetch(root: str | Path, paths: Sequence[Path]) -> None:
    """``datalad get`` exactly ``paths`` (folders or files) of the dataset at ``root``; MRIError naming a failure."""
    if not paths:
        return
    try:
        import datalad.api as dl
    except ImportError:
        raise MRIError(
            f"{root} is a DataLad dataset but datalad is not installed (pip install datalad; apt install git-annex)"
        ) from None
    results = dl.get(
        path=[str(p) for p in paths], dataset=str(root), result_renderer="disabled", on_failure="ignore", return_type="list"
    )
    failed = [r for r in results if r.get("status") in ("error", "impossible")]
    if failed:
        first = failed[0]
        raise MRIError(
            f"datalad could not get {first.get('path')}: {first.get('message') or first.get('status')}"
            + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
        )
