"""hpclab.dask_cluster's clusters accept only their owner's processes (issue 26's audit, item 2d).

Every account shares the loopback, and a dask scheduler runs whatever code a connected client sends: the audit
had ``nobody`` run code as a cluster's owner. Here a real cluster is started by one account (alice, in a private
home of the test's), another account (nobody) tries every way in, and the owner's own Client in a separate
process, with no extra code, connects and runs a task.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("distributed")
pytest.importorskip("cryptography")

OWNER = "alice"

CLUSTER = textwrap.dedent("""
    import sys
    from hpclab.dask_cluster import local_cluster

    if __name__ == "__main__":  # workers are spawned processes that import this file
        with local_cluster(1, memory_limit="512MiB") as cluster:
            print(cluster.scheduler_address, flush=True)
            sys.stdin.read()  # until the test closes stdin
""")

OWNERS_CLIENT = textwrap.dedent("""
    import os, sys
    from distributed import Client

    with Client(sys.argv[1], timeout=20) as client:  # dask's config from ~/.config/dask: no security passed
        print(client.submit(os.getuid, pure=False).result(timeout=20))
""")

# each way in that an account without the owner's key has: plain TCP, TLS with a certificate of its own, the
# owner's files (unreadable), and a bare TLS handshake without any certificate
ATTACKER = textwrap.dedent("""
    import os, socket, ssl, sys
    from distributed import Client
    from distributed.security import Security

    address, key = sys.argv[1], sys.argv[2]
    host, port = address.split("://")[1].rsplit(":", 1)

    def attempt(what, connect):
        try:
            with connect() as client:
                uid = client.submit(os.getuid, pure=False).result(timeout=10)
            print(f"{what}: RAN CODE as uid {uid}")
        except BaseException as err:
            print(f"{what}: refused: {type(err).__name__}")

    attempt("tcp", lambda: Client("tcp://" + host + ":" + port, timeout=5))
    attempt("tls-own-cert", lambda: Client(address, security=Security.temporary(), timeout=5))
    try:
        open(key).read()
        print("key: READ")
    except OSError as err:
        print(f"key: refused: {type(err).__name__}")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(b"x")
            tls.recv(1)  # TLS 1.3: the server's refusal of a client without a certificate arrives here
        print("bare-tls: ACCEPTED")
    except (ssl.SSLError, OSError) as err:
        print(f"bare-tls: refused: {type(err).__name__}")
""")


def _as(account: str, home, *argv: str, **kwargs) -> subprocess.Popen:
    """``python argv`` run as ``account`` with HOME=``home`` (setpriv, as a kernel of that account would be)."""
    user = pwd.getpwnam(account)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", sys.executable, *argv]
    return subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.fixture(autouse=True)
def _own_dask_config(monkeypatch):
    """user_security() run in this process updates dask's config: the next tests get the suite's own back."""
    import copy

    import dask.config

    monkeypatch.setattr(dask.config, "config", copy.deepcopy(dask.config.config))


@pytest.fixture
def homes(tmp_path):
    """A private home for the owner and one for nobody, reachable through the test's folders."""
    for parent in (tmp_path, *tmp_path.parents):  # both accounts may enter the folders on the way
        if parent.stat().st_mode & 0o001 == 0:
            parent.chmod(parent.stat().st_mode | 0o001)
    for name in ("cluster.py", "client.py", "attacker.py"):
        (tmp_path / name).write_text({"cluster.py": CLUSTER, "client.py": OWNERS_CLIENT, "attacker.py": ATTACKER}[name])
        (tmp_path / name).chmod(0o644)
    result = {}
    for account in (OWNER, "nobody"):
        user = pwd.getpwnam(account)
        home = tmp_path / f"home-{account}"
        home.mkdir(mode=0o700)
        os.chown(home, user.pw_uid, user.pw_gid)
        result[account] = home
    return tmp_path, result


@pytest.mark.skipif(os.geteuid() != 0, reason="running as two accounts needs root")
def test_another_account_cannot_use_a_users_local_cluster_while_her_own_client_can(homes):
    folder, home = homes
    cluster = _as(OWNER, home[OWNER], str(folder / "cluster.py"), stdin=subprocess.PIPE)
    try:
        address = cluster.stdout.readline().strip()
        assert address.startswith("tls://127.0.0.1:"), (address, cluster.stderr.read() if not address else "")
        tls = home[OWNER] / ".config" / "hpclab" / "dask-tls"
        key = tls / "key.pem"
        assert stat.S_IMODE(tls.stat().st_mode) == 0o700 and stat.S_IMODE(key.stat().st_mode) == 0o600
        assert (home[OWNER] / ".config" / "dask" / "hpclab-tls.yaml").is_file()

        attacker = _as("nobody", home["nobody"], str(folder / "attacker.py"), address, str(key))
        out, err = attacker.communicate(timeout=120)
        lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
        assert set(lines) == {"tcp", "tls-own-cert", "key", "bare-tls"}, (out, err)
        assert all(v.startswith("refused") for v in lines.values()), out

        owner = _as(OWNER, home[OWNER], str(folder / "client.py"), address)
        out, err = owner.communicate(timeout=120)
        assert owner.returncode == 0, err
        assert out.strip() == str(pwd.getpwnam(OWNER).pw_uid)
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(30)
        except subprocess.TimeoutExpired:
            cluster.kill()


def test_a_home_others_may_write_is_refused_with_the_reason(tmp_path, monkeypatch):
    """Whoever can write in the folders on the way to the key could swap in a key of their own."""
    from hpclab.dask_tls import DaskTLSError, user_security

    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DASK_CONFIG", raising=False)
    with pytest.raises(DaskTLSError, match=r"is writable by others \(mode 0777\).*chmod go-w"):
        user_security()


def test_missing_or_broken_files_are_made_again(tmp_path, monkeypatch):
    from hpclab.dask_tls import tls_folder, user_security

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DASK_CONFIG", raising=False)
    first = user_security()
    key = tls_folder() / "key.pem"
    original = key.read_bytes()
    assert user_security().tls_client_key == first.tls_client_key and key.read_bytes() == original  # kept
    key.write_text("not a key")
    user_security()
    assert key.read_bytes() not in (original, b"not a key") and stat.S_IMODE(key.stat().st_mode) == 0o600
    key.chmod(0o644)  # readable by others: no longer a secret
    user_security()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
