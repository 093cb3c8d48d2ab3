"""Results that are never half-written: output checks before the work, atomic writes after it.

Every science command (``hpclab mri``, ``hpclab josephson``, ``hpclab train``) checks where its
results go before it computes anything (:func:`check_output_file`, :func:`check_output_dir`), writes
each result to a temporary file in the target folder and renames it into place
(:func:`atomic_output`), so an interrupted write leaves the previous result as it was and no
temporary file behind. Results that belong together (``hpclab mri process``'s volumes, table and
views) are written into a hidden staging folder and renamed into place as one set
(:func:`output_set`). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .interrupts import raise_if_signalled, signals_deferred

#: prefix of the temporary files :func:`atomic_output` makes next to their target (and of
#: :func:`output_set`'s staging folders: ``.hpclab-tmp-set-*``)
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
        with signals_deferred():  # a SIGTERM between creating and removing the probe would leave it
            fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {_reason(exc)}") from None
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
    tmp: Path | None = None
    try:
        with signals_deferred():  # once the file exists, the clean-up below knows it
            fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.stem}-", suffix=suffix, dir=target.parent)
            tmp = Path(tmp_name)
            os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:  # the data reach the disk before the name does
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


@contextlib.contextmanager
def output_set(folder: str | os.PathLike[str], names: Iterable[str]) -> Iterator[Path]:
    """Yield a hidden staging folder in ``folder``; on success its files replace the set ``names`` there at once.

    Write every file of the set into the staging folder under its final name. When the block ends
    without an exception, they are renamed into ``folder`` with SIGTERM and SIGINT held back
    (:func:`hpclab.interrupts.signals_deferred`), and the names of the set the block did not write are
    removed: ``folder`` holds the whole previous set or the whole new one, never a mix; its other
    files are left alone. The staging folder is removed in every case (only SIGKILL or a power cut
    can leave one behind, listed by :func:`leftover_temporaries`).
    """
    target = Path(folder)
    staging: Path | None = None
    try:
        with signals_deferred():  # once the folder exists, the clean-up below is sure to know it
            staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}set-", dir=target))
        yield staging
        _commit(staging, target, set(names))
    finally:
        if staging is not None:
            try:
                with signals_deferred():
                    shutil.rmtree(staging, ignore_errors=True)
            finally:  # again, in case a signal came before the deferral began
                shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, folder: Path, names: set[str]) -> None:
    """Rename every file of ``staging`` into ``folder`` and remove the rest of ``names`` there, signals held back."""
    staged = sorted(staging.iterdir())
    in_the_way = [folder / name for name in sorted(names | {p.name for p in staged}) if (folder / name).is_dir()]
    if in_the_way:  # checked before the first rename: a failure half-way would leave a mix
        raise OutputError(f"{in_the_way[0]} is a folder; nothing was replaced")
    for path in staged:  # the data reach the disk before the names do
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    with signals_deferred():
        raise_if_signalled()  # a SIGTERM whose exception a __del__ swallowed: keep the previous set
        for path in staged:
            os.replace(path, folder / path.name)
        for name in names - {p.name for p in staged}:
            (folder / name).unlink(missing_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def leftover_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Temporary files and staging folders left in ``folder`` (only after a hard kill: SIGKILL, power cut)."""
    return sorted(Path(folder).glob(f"{TEMP_PREFIX}*"))


def remove_temporaries(folder: str | os.PathLike[str], patterns: Iterable[str] = (f"{TEMP_PREFIX}*",)) -> list[Path]:
    """Remove the temporaries matching ``patterns`` anywhere under ``folder``; returns what was removed.

    Only for a caller that knows no process still writes there (e.g. after killing its workers).
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    found = sorted({p for pattern in patterns for p in root.rglob(pattern)}, key=lambda p: len(p.parts))
    removed: list[Path] = []
    for path in found:
        if any(parent in removed for parent in path.parents):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
