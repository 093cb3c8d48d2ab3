"""LDAP login against Debian's slapd: LDAP groups decide profiles and admin rights."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support.hubtools import Hub, HubClient, free_port, hub_yaml


pytestmark = pytest.mark.hub

SUFFIX = "dc=hpclab,dc=test"
PASSWORDS = {"carol": "carol-ldap-pass", "dave": "dave-ldap-pass", "erin": "erin-ldap-pass",
             "Frank": "frank-ldap-pass", ".mallory": "mallory-ldap-pass"}  # valid LDAP uids; the hub's name rule decides
ENTRIES = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: HPCLab test
dc: hpclab

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups
""" + "".join(
    f"""
dn: uid={name},ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: {name}
cn: {name.title()}
sn: Test
userPassword: {password}
"""
    for name, password in PASSWORDS.items()
) + f"""
dn: cn=gpu-users,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: gpu-users
member: uid=carol,ou=people,{SUFFIX}

dn: cn=hpc-admins,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: hpc-admins
member: uid=erin,ou=people,{SUFFIX}
"""


@pytest.fixture(scope="module")
def slapd():
    """Debian's slapd on a free port with users carol (gpu-users), dave (no group), erin (hpc-admins),
    Frank and .mallory (no group: names the hub normalises or refuses)."""
    if not Path("/usr/sbin/slapd").exists():
        pytest.fail("slapd missing: make test installs Debian's slapd and ldap-utils")
    root = Path(tempfile.mkdtemp(prefix="hpclab-ldap-"))
    (root / "db").mkdir()
    port = free_port()
    (root / "slapd.conf").write_text(
        "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis"))
        + f"""
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {root}/slapd.pid
database mdb
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
rootpw ldap-admin-secret
directory {root}/db
access to attrs=userPassword by anonymous auth by self read by * none
access to * by * read
"""
    )
    subprocess.run(["/usr/sbin/slapd", "-f", str(root / "slapd.conf"), "-h", f"ldap://127.0.0.1:{port}/"], check=True)
    for _ in range(50):
        if subprocess.run(["ldapsearch", "-x", "-H", f"ldap://127.0.0.1:{port}", "-b", "", "-s", "base"],
                          capture_output=True).returncode in (0, 32):
            break
        time.sleep(0.1)
    subprocess.run(["ldapadd", "-x", "-H", f"ldap://127.0.0.1:{port}", "-D", f"cn=admin,{SUFFIX}", "-w", "ldap-admin-secret"],
                   input=ENTRIES, text=True, check=True, capture_output=True)
    try:
        yield port
    finally:
        pid = (root / "slapd.pid").read_text().strip() if (root / "slapd.pid").exists() else ""
        if pid:
            subprocess.run(["kill", pid])
        time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ldap_hub(slapd, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ldap-hub")
    config = hub_yaml(workdir / "state")
    config["hub"]["admin_users"] = []
    config["auth"] = {
        "type": "ldap",
        "ldap": {
            "server": "127.0.0.1",
            "port": slapd,
            "tls": "none",  # the test directory has no certificate
            "bind_dn_templates": [f"uid={{username}},ou=people,{SUFFIX}"],
            "groups": {"gpu-users": f"cn=gpu-users,ou=groups,{SUFFIX}", "hpc-admins": f"cn=hpc-admins,ou=groups,{SUFFIX}"},
            "admin_groups": ["hpc-admins"],
        },
    }
    hub = Hub(workdir, config)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        hub.kill_servers()


def ldap_login(hub: Hub, name: str, password: str | None = None) -> tuple[HubClient, bool]:
    client = HubClient(hub)
    response = client.login(name, password or PASSWORDS[name])
    return client, response.ok and "/hub/login" not in response.url


def test_wrong_ldap_password_is_refused(ldap_hub):
    assert ldap_login(ldap_hub, "carol", "not-her-password")[1] is False


def test_ldap_group_member_sees_gpu_profile_and_others_do_not(ldap_hub):
    carol, ok = ldap_login(ldap_hub, "carol")
    assert ok
    assert 'value="gpu-1"' in carol.spawn_form()
    dave, ok = ldap_login(ldap_hub, "dave")
    assert ok
    assert "gpu-1" not in dave.spawn_form()
    forged = dave.post_spawn("dave", "gpu-1")
    assert forged.status_code == 403
    assert dave.api("GET", "/users/dave").json()["servers"] == {}


def test_ldap_admin_group_grants_the_admin_page(ldap_hub):
    erin, ok = ldap_login(ldap_hub, "erin")
    assert ok
    assert erin.http.get(f"{ldap_hub.url}/hub/admin").status_code == 200
    assert erin.api("GET", "/users/erin").json()["admin"] is True
    dave, _ = ldap_login(ldap_hub, "dave")
    assert dave.http.get(f"{ldap_hub.url}/hub/admin").status_code == 403


def test_ldap_groups_are_synced_into_the_hub(ldap_hub):
    erin, _ = ldap_login(ldap_hub, "erin")
    ldap_login(ldap_hub, "carol")
    groups = {g["name"]: g["users"] for g in erin.api("GET", "/groups").json()}
    assert groups["gpu-users"] == ["carol"] and groups["hpc-admins"] == ["erin"]


def test_ldap_names_follow_the_hub_name_rule(ldap_hub):
    """One name rule for LDAP logins too: a name the rule refuses (here a real directory account, '.mallory',
    with its right password) gets the reason and never becomes a hub user; 'Frank' and fullwidth 'ＦＲＡＮＫ'
    log in as 'frank'."""
    mallory = HubClient(ldap_hub).login(".mallory", PASSWORDS[".mallory"])
    assert mallory.status_code == 403 and "must not start with a dot" in mallory.text, mallory.text[-2000:]
    hostile = HubClient(ldap_hub).login("eve\t<script>alert(1)</script>", "any-password")
    assert hostile.status_code == 403 and "may hold only letters a-z, digits" in hostile.text
    assert "<script>alert(1)" not in hostile.text
    for typed in ("Frank", "\uff26\uff32\uff21\uff2e\uff2b"):  # upper case; fullwidth (NFKC)
        frank, ok = ldap_login(ldap_hub, typed, PASSWORDS["Frank"])
        assert ok, typed
        assert frank.api("GET", "/user").json()["name"] == "frank"
    erin, _ = ldap_login(ldap_hub, "erin")
    names = {user["name"] for user in erin.api("GET", "/users").json()}
    assert "frank" in names and not {"Frank", ".mallory", "mallory"} & names
    assert not any("<" in name or "\t" in name for name in names)
