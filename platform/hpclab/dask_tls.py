"""Mutual TLS for a user's dask clusters: only processes of the account that holds the key may connect.

On a shared host every account reaches the loopback, and a dask scheduler runs any code a connected client
sends; so hpclab's clusters listen on ``tls://`` and ask every peer (client, worker) for a certificate signed
by a key that only the user can read. The key and its self-signed certificate live in
``~/.config/hpclab/dask-tls/`` (folder 0700, files 0600, made on first use, remade when missing, unreadable
or near expiry); ``~/.config/dask/hpclab-tls.yaml`` names them in dask's config, which dask reads at
import, so the user's ``Client("tls://...")`` in any kernel (or a SLURM worker job, the home being shared)
connects with no extra code while another account, lacking the key, fails the TLS handshake.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

#: days a new certificate is valid; one with less than RENEW_DAYS left is remade
VALID_DAYS = 825
RENEW_DAYS = 7
CONFIG_NAME = "hpclab-tls.yaml"


def tls_folder() -> Path:
    """Where the user's dask key and certificate are kept: ``~/.config/hpclab/dask-tls``."""
    return Path.home() / ".config" / "hpclab" / "dask-tls"


def dask_config_folder() -> Path:
    """The folder of the user's own dask config files, as dask finds it at import (``DASK_CONFIG`` or ~/.config/dask)."""
    return Path(os.environ.get("DASK_CONFIG") or Path.home() / ".config" / "dask")


class DaskTLSError(RuntimeError):
    """The user's dask TLS files cannot be kept private (a folder on the way others may write, or no home)."""


def _check_private(folder: Path) -> None:
    """Refuse when ``folder`` or a folder between it and the home is owned by another account or writable by others:
    whoever can write there could swap in a key of their own and then connect to the user's clusters."""
    home = Path.home()
    me = os.geteuid()
    chain = [folder, *[p for p in folder.parents if p == home or home in p.parents]]
    for path in chain:
        st = path.stat()
        if st.st_uid not in (me, 0) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise DaskTLSError(
                f"hpclab's dask clusters keep their TLS key in {folder}, but {path} is "
                f"{'owned by uid ' + str(st.st_uid) if st.st_uid not in (me, 0) else 'writable by others'} "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): another account could replace the key and run code in your "
                f"clusters. Make it private (chmod go-w {path}) and try again."
            )


def _private_folder(folder: Path) -> Path:
    """``folder`` made (0700 at every new level) and checked private; DaskTLSError when that cannot be done."""
    try:
        old = os.umask(0o077)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(old)
        if folder.stat().st_uid == os.geteuid():
            folder.chmod(0o700)
    except OSError as err:
        raise DaskTLSError(f"hpclab's dask clusters need a private folder for their TLS key: {folder}: {err}") from err
    _check_private(folder)
    return folder


def _usable(cert_file: Path, key_file: Path) -> bool:
    """Whether the pair is readable, matches, is private and stays valid for RENEW_DAYS more days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        for path in (cert_file, key_file):
            st = path.stat()
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                return False
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != (
        key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ):
        return False
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left > datetime.timedelta(days=RENEW_DAYS)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically (a reader sees the old file or the new one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_pair(cert_file: Path, key_file: Path) -> None:
    """A new EC key and a self-signed certificate for it (the certificate is its own CA, as Security.temporary)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        import pwd

        who = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        who = str(os.geteuid())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hpclab dask {who}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dask-internal")]), critical=False)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .sign(key, hashes.SHA256())
    )
    _write_private(
        key_file,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    _write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM))


def tls_config(cert_file: Path, key_file: Path) -> dict[str, Any]:
    """dask's config for these files: encryption required, every role (client, scheduler, worker) with this pair."""
    pair = {"cert": str(cert_file), "key": str(key_file)}
    return {
        "distributed": {
            "comm": {
                "require-encryption": True,
                "default-scheme": "tls",  # an address without one, and a scheduler dask-jobqueue starts without security
                "tls": {"ca-file": str(cert_file), "client": dict(pair), "scheduler": dict(pair), "worker": dict(pair)},
            }
        }
    }


def _write_dask_config(config: dict[str, Any]) -> None:
    """~/.config/dask/hpclab-tls.yaml with ``config`` (rewritten only when it differs), and this process's dask
    config updated too (dask read its files at import, maybe before this one existed)."""
    import dask.config
    import yaml

    folder = _private_folder(dask_config_folder())
    path = folder / CONFIG_NAME
    text = (
        "# Written by hpclab (hpclab.dask_tls): your dask clusters accept only peers holding your key.\n"
        "# Remove this file and ~/.config/hpclab/dask-tls to make a new key on the next cluster.\n"
        + yaml.safe_dump(config, sort_keys=True)
    )
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current != text:
        _write_private(path, text.encode())
    dask.config.update(dask.config.config, config, priority="new")


def user_security():
    """The distributed ``Security`` of this account's clusters (mutual TLS with its own key), making the key,
    certificate and dask config file first where they are missing or unusable."""
    from distributed import Security

    folder = _private_folder(tls_folder())
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    with open(os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)) as lock:  # two kernels on first use: one pair
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(cert_file, key_file):
            _new_pair(cert_file, key_file)
    _write_dask_config(tls_config(cert_file, key_file))
    return Security()  # read from the config just written: encryption required, every role with this pair
