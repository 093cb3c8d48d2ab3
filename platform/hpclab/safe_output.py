"""Results that are never half-written: output checks before the work, atomic writes after it.

Every science command (``hpclab mri``, ``hpclab josephson``, ``hpclab train``) checks where its
results go before it computes anything (:func:`check_output_file`, :func:`check_output_dir`), writes
each result to a temporary file in the target folder and renames it into place
(:func:`atomic_output`), so an interrupted write leaves the previous result as it was and no
temporary file behind. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: prefix of the temporary files :func:`atomic_output` makes next to their target
TEMP_PREFIX = ".hpclab-tmp-"


class OutputError(Exception):
    """An output path that cannot be written; the message names the path and the reason."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_dir(path: str | os.PathLike[str], *, create: bool = True) -> Path:
    """Make sure files can be created in the folder ``path`` (creating it when ``create``).

    A probe file is created and removed, so permissions, read-only mounts and a full quota of
    inodes are all caught before any computing starts. Raises :class:`OutputError`.
    """
    folder = Path(path)
    try:
        exists = folder.exists()
    except OSError as exc:
        raise OutputError(f"cannot reach {folder}: {_reason(exc)}") from None
    if exists and not folder.is_dir():
        raise OutputError(f"{folder} is not a folder")
    if not exists:
        if not create:
            raise OutputError(f"folder {folder} does not exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {folder}: {_reason(exc)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {_reason(exc)}") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def check_output_file(path: str | os.PathLike[str], *, suffix: str | None = None, overwrite: bool = True) -> Path:
    """Make sure ``path`` can be written as a file (its folder is created if missing).

    ``suffix`` (".npz") is required when given; ``overwrite=False`` refuses an existing file.
    Raises :class:`OutputError` naming the path.
    """
    target = Path(path)
    if suffix and target.suffix != suffix:
        raise OutputError(f"{target} must end in {suffix}")
    try:
        if target.is_dir():
            raise OutputError(f"{target} is a folder; give a file name ending in {suffix or 'the right suffix'}")
        if target.exists() and not overwrite:
            raise OutputError(f"{target} exists; remove it or choose another name")
    except OSError as exc:  # a folder on the way that this account may not enter
        raise OutputError(f"cannot reach {target}: {_reason(exc)}") from None
    check_output_dir(target.parent)
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else remove it.

    The rename is atomic on POSIX file systems: readers see the old file or the new one, never a
    partial one, whatever interrupts the write (an exception, Ctrl-C, SIGTERM turned into an
    exception by :mod:`hpclab.interrupts`). The temporary file keeps ``path``'s suffixes so
    libraries that choose a format by name (nibabel, matplotlib) write the right one.
    """
    target = Path(path)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.stem}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the data reach the disk before the name does
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def leftover_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Temporary files :func:`atomic_output` left in ``folder`` (only after a hard kill: SIGKILL, power cut)."""
    return sorted(Path(folder).glob(f"{TEMP_PREFIX}*"))
