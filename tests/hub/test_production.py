"""Production set-up: hub state in a real PostgreSQL (Debian's server), HTTPS with HTTP redirected."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from support.hubtools import TEST_PUBLIC_HOST, free_port, hub_yaml, login, server_process, started_hub, stop_server


pytestmark = pytest.mark.hub


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL server binaries missing: make test installs Debian's postgresql package")
    return found[-1]


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL server (Debian's) on a free port, with database and role 'hpclab'; yields its URL."""
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL as the postgres account needs root")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="hpclab-pg-"))  # not under pytest's root-only folder: postgres must reach it
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(sock, "postgres")
    port = free_port()
    as_pg = ["sudo", "-u", "postgres"]
    subprocess.run([*as_pg, _pg_bin("initdb"), "-D", str(data), "--auth-local=trust", "--auth-host=scram-sha-256", "-U", "postgres"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "pg.log"), "-w", "start"],
                   check=True, capture_output=True)
    psql = [*as_pg, "psql", "-h", str(sock), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    subprocess.run([*psql, "CREATE ROLE hpclab LOGIN PASSWORD 'pg-test-secret'"], check=True, capture_output=True)
    subprocess.run([*psql, "CREATE DATABASE hpclab OWNER hpclab"], check=True, capture_output=True)
    try:
        yield f"postgresql://hpclab:pg-test-secret@127.0.0.1:{port}/hpclab"
    finally:
        subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, the tests' hub name and its users' names under it (openssl; test only)."""
    cert, key = folder / "hub.crt", folder / "hub.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", f"subjectAltName=IP:127.0.0.1,DNS:{TEST_PUBLIC_HOST},DNS:*.{TEST_PUBLIC_HOST}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def production_hub(postgres, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prod-hub")
    # outside /tmp, as a site's /etc/ssl would be: each server gets a private /tmp of its own and would not see it
    tls = Path(tempfile.mkdtemp(prefix="hpclab-test-tls-", dir="/var/tmp"))
    tls.chmod(0o755)
    cert, key = self_signed_certificate(tls)
    config = hub_yaml(workdir / "state")
    config["hub"].update(db_url=postgres, ssl_cert=str(cert), ssl_key=str(key), http_redirect_port=free_port())
    # servers call the hub API through the proxy over HTTPS (one door): they must trust its self-signed certificate
    for profile in config["profiles"]:
        profile["local"] = {"environment": {"SSL_CERT_FILE": str(cert)}}
    try:
        with started_hub(workdir, config, accounts=("alice",)) as hub:
            yield hub
    finally:
        shutil.rmtree(tls, ignore_errors=True)


def test_plain_http_is_redirected_to_https(production_hub):
    plain = f"http://127.0.0.1:{production_hub.config['hub']['http_redirect_port']}/hub/login"
    response = requests.get(plain, allow_redirects=False, timeout=10)
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["Location"].startswith(f"https://127.0.0.1:{production_hub.config['hub']['port']}/hub/login")


def test_restart_on_postgresql_keeps_users_groups_and_running_server(production_hub, postgres):
    import psycopg

    alice = login(production_hub, "alice")
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    alice.wait_ready("alice")
    data_dir = production_hub.config["hub"]["data_dir"]
    pid = server_process(data_dir, "alice").pid

    production_hub.stop()
    production_hub.start()

    admin = login(production_hub, "admin")
    assert admin.wait_ready("alice", timeout=30)["state"]["pid"] == pid
    assert "alice" in admin.api("GET", "/groups/gpu-users").json()["users"]
    assert alice.http.get(production_hub.user_url("alice") + "lab").status_code == 200
    with psycopg.connect(postgres) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name FROM users ORDER BY name")
        assert [row[0] for row in cursor.fetchall()] == ["admin", "alice"]
        cursor.execute("SELECT username FROM users_info ORDER BY username")
        assert [row[0] for row in cursor.fetchall()] == ["admin", "alice"]
    assert not list(Path(data_dir).glob("*.sqlite")), "hub state must live in PostgreSQL, not SQLite"
    stop_server(alice, "alice")


def test_hub_cookies_are_secure_and_samesite_over_https(production_hub):
    client = login(production_hub, "alice")
    hub_cookies = [cookie for cookie in client.http.cookies if cookie.path.startswith("/hub")]
    assert hub_cookies
    for cookie in hub_cookies:
        assert cookie.secure, f"{cookie.name} is sent over plain HTTP too"
        assert cookie.get_nonstandard_attr("SameSite") == "Lax", cookie.name
