"""Example notebooks in every session: ``examples/`` refreshed from the deployment's copy, users' edits kept.

The deployment keeps one copy of the example notebooks (the repository's ``notebooks/`` folder and the
small files they need). At each start, the Jupyter server extension here copies that folder into
``examples/`` of the server's root folder. A manifest (``examples/.hpclab-examples.json``) remembers
the SHA-256 of the version last delivered for each file, which tells a file the user has not touched
(upgraded in place) from one they edited (left alone; a new version is written beside it as
``NAME.updated.ipynb``). A file the user deleted is delivered again, as nbgitpuller does.

Every write goes to a temporary file in the same folder, is fsynced and then renamed over the
destination, so a server stopped in the middle never leaves a truncated notebook. Nothing in the
target is reached through a symbolic link: folders are opened with ``O_NOFOLLOW`` relative to their
parent's descriptor, and a symlink found where a file or folder would go is left alone and reported.

Load it with ``--ServerApp.jpserver_extensions=hpclab.examples=True``; ``HPCLAB_EXAMPLES_DIR`` names
the deployment's copy (unset or empty: the extension does nothing) and ``HPCLAB_EXAMPLES_TARGET`` the
folder, relative to the server's root folder (default ``examples``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = ".hpclab-examples.json"
DEFAULT_TARGET = "examples"
#: Temporary files start with this (hidden in JupyterLab); a stale one from a killed server is removed.
TEMP_PREFIX = ".hpclab-tmp-"
#: A temp file older than this is stale; a younger one may be another server's (named servers share a home).
STALE_SECONDS = 600

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hpclab.examples"}]


@dataclass
class SyncReport:
    """What one sync did, as paths relative to the target folder (POSIX separators)."""

    copied: list[str] = field(default_factory=list)  # new in the target (first delivery, or deleted by the user)
    updated: list[str] = field(default_factory=list)  # unedited copies replaced by the new version
    offered: list[str] = field(default_factory=list)  # edited by the user; the new version written as NAME.updated.EXT
    skipped: list[str] = field(default_factory=list)  # a symlink or a non-file in the way: left alone
    failed: list[str] = field(default_factory=list)  # "path: error" for files that could not be written
    unchanged: list[str] = field(default_factory=list)  # nothing to write (identical, or an edit already offered)

    def summary(self) -> str:
        """One line for the server log."""
        parts = [f"{len(self.copied)} copied", f"{len(self.updated)} updated", f"{len(self.unchanged)} unchanged"]
        if self.offered:
            parts.append(
                f"{len(self.offered)} edited by the user, new version beside as "
                + ", ".join(updated_name(p) for p in self.offered)
            )
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (symlink or not a regular file: {', '.join(self.skipped)})")
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({'; '.join(self.failed)})")
        return ", ".join(parts)


def updated_name(relative: str) -> str:
    """Where the new version of an edited file goes: ``a/b.ipynb`` -> ``a/b.updated.ipynb``."""
    path = PurePosixPath(relative)
    return str(path.with_name(f"{path.stem}.updated{path.suffix}"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _skip(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


def _source_files(source: Path) -> Iterator[tuple[PurePosixPath, Path]]:
    """(relative path, absolute path) of each regular file to deliver, folders in sorted order."""

    def fail(error: OSError) -> None:
        raise error  # os.walk would skip a folder it cannot list: say so instead

    for folder, dirs, files in os.walk(source, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not _skip(d))
        for name in sorted(files):
            path = Path(folder) / name
            if not _skip(name) and path.is_file():
                yield PurePosixPath(path.relative_to(source).as_posix()), path


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read(name: str, dir_fd: int) -> bytes:
    """The bytes of a regular file in ``dir_fd``; OSError (ELOOP) if it is a symlink."""
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _write_atomic(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``name`` in ``dir_fd`` all at once: temp file, fsync, rename; the temp file is gone on failure."""
    temp = f"{TEMP_PREFIX}{secrets.token_hex(6)}-{name[:100]}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)  # the rename itself survives a crash


def _remove_stale_temps(dir_fd: int) -> None:
    """Temp files a killed server left behind (regular files, old enough not to be another server's, writing now)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(dir_fd):
            info = _lstat(name, dir_fd) if name.startswith(TEMP_PREFIX) else None
            if info is not None and stat.S_ISREG(info.st_mode) and info.st_mtime < time.time() - STALE_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)


class _Folders:
    """Descriptors of the target's folders, each opened without following a symlink (created 0755 if missing)."""

    def __init__(self, root_fd: int) -> None:
        self.fds: dict[PurePosixPath, int | None] = {PurePosixPath("."): root_fd}

    def open(self, folder: PurePosixPath, report: SyncReport) -> int | None:
        """The descriptor of ``folder``, or None if it (or a folder above it) is a symlink or a file."""
        if folder in self.fds:
            return self.fds[folder]
        parent = self.open(folder.parent, report)
        fd = None
        if parent is not None:
            try:
                fd = _open_folder(folder.name, parent)
                _remove_stale_temps(fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                report.skipped.append(str(folder))
        self.fds[folder] = fd
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)


def _open_folder(name: str, parent_fd: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _load_manifest(root_fd: int) -> dict[str, str]:
    try:
        data = json.loads(_read(MANIFEST, root_fd))
    except (OSError, ValueError):
        return {}  # none yet, unreadable or a symlink: every file is judged by its content
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def _sync_file(relative: PurePosixPath, data: bytes, dir_fd: int, manifest: dict[str, str], report: SyncReport) -> None:
    """Apply the rules to one file (see :func:`sync_examples`)."""
    key, name, new = str(relative), relative.name, _sha256(data)
    info = _lstat(name, dir_fd)
    if info is None:
        _write_atomic(dir_fd, name, data)
        manifest[key] = new
        report.copied.append(key)
        return
    if not stat.S_ISREG(info.st_mode):
        report.skipped.append(key)
        return
    try:
        current = _sha256(_read(name, dir_fd))
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # replaced by a symlink since the lstat
            raise
        report.skipped.append(key)
        return
    delivered = manifest.get(key)
    if current == new:
        manifest[key] = new
        report.unchanged.append(key)
    elif delivered == current:  # the user has not touched it: upgrade in place
        _write_atomic(dir_fd, name, data)
        manifest[key] = new
        report.updated.append(key)
    elif delivered != new:  # edited by the user, and this version was not offered yet
        beside = PurePosixPath(updated_name(key)).name
        beside_info = _lstat(beside, dir_fd)
        if beside_info is not None and not stat.S_ISREG(beside_info.st_mode):
            report.skipped.append(updated_name(key))
            return
        _write_atomic(dir_fd, beside, data)
        manifest[key] = new
        report.offered.append(key)
    else:
        report.unchanged.append(key)


def sync_examples(source: Path, target: Path) -> SyncReport:
    """Deliver every regular file under ``source`` into ``target`` without overwriting a user's edits.

    Per file: missing in the target -> copied (also after the user deleted it); unchanged since it was
    delivered and changed in the source -> replaced; edited by the user and a new version in the source
    -> the user's file is kept and the new version written beside it as ``<stem>.updated<suffix>``
    (recorded, so it is offered once per new version); identical -> nothing. Names starting with ``.``
    and ``__pycache__`` are not delivered; files the source no longer has are left alone.

    Raises OSError when ``source`` is not a readable folder or ``target`` cannot be created; a file that
    cannot be read or written is listed in ``SyncReport.failed`` and the others are still delivered.
    """
    source, target = Path(source), Path(target)
    if not stat.S_ISDIR(os.stat(source).st_mode):  # FileNotFoundError, PermissionError ...
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(source))
    files = list(_source_files(source))  # read the listing first: an unreadable source fails here
    report = SyncReport()
    target.parent.mkdir(parents=True, exist_ok=True)  # above the target, symlinks are the site's business
    parent_fd = os.open(target.parent, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        root_fd = _open_folder(target.name, parent_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        report.skipped.append(".")  # the target itself is a symlink or a file
        return report
    finally:
        os.close(parent_fd)
    folders = _Folders(root_fd)
    try:
        _remove_stale_temps(root_fd)
        manifest = _load_manifest(root_fd)
        before = dict(manifest)
        for relative, path in files:
            try:
                dir_fd = folders.open(relative.parent, report)
                if dir_fd is not None:
                    _sync_file(relative, path.read_bytes(), dir_fd, manifest, report)
            except OSError as exc:
                report.failed.append(f"{relative}: {exc.strerror or exc}")
        if manifest != before:
            info = _lstat(MANIFEST, root_fd)
            if info is not None and not stat.S_ISREG(info.st_mode):
                report.skipped.append(MANIFEST)
            else:
                try:
                    _write_atomic(root_fd, MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
                except OSError as exc:
                    report.failed.append(f"{MANIFEST}: {exc.strerror or exc}")
    finally:
        folders.close()
    return report


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Refresh ``<root_dir>/examples`` from ``HPCLAB_EXAMPLES_DIR``; a failure is a warning, never a failed start."""
    source = os.environ.get("HPCLAB_EXAMPLES_DIR", "").strip()
    if not source:
        serverapp.log.debug("hpclab.examples: HPCLAB_EXAMPLES_DIR is not set; no examples delivered")
        return
    target = Path(serverapp.root_dir) / (os.environ.get("HPCLAB_EXAMPLES_TARGET", "").strip() or DEFAULT_TARGET)
    try:
        report = sync_examples(Path(source), target)
    except Exception as exc:  # noqa: BLE001 - the server must start whatever happens here
        serverapp.log.warning("hpclab.examples: could not refresh %s from %s: %s", target, source, exc)
        return
    log = serverapp.log.warning if report.failed else serverapp.log.info
    log("hpclab.examples: %s from %s: %s", target, source, report.summary())
