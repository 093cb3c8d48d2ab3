"""The share dialog's hub side (web/sharing.py): which origins may read the hub's API, and what a lab's token may do.

The browser test (tests/e2e/test_collaboration.py) runs the dialog for real; these pin the edges: an origin one
label below the hub's is a user's, nothing else is (not the hub's own, not a look-alike), only the API answers, and
never with credentials; a lab's token manages only its own server's shares.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from hpclab.share_access import granted
from hpclab_hub.web.sharing import SERVER_ACCESS, SHARE_DIALOG_SCOPES, LabTokenScopes, user_origins_cors

CORS = user_origins_cors("http://hpclab.example.org:8000", "/hub/api/")


def _answer(origin: str, path: str = "/hub/api/user") -> HTTPHeaders:
    headers = HTTPHeaders({"Origin": origin, "Host": "hpclab.example.org:8000"})
    request = HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"), headers=headers)
    _, answered, _ = CORS(request).transform_first_chunk(200, HTTPHeaders(), b"", True)
    return answered


def test_a_users_own_origin_may_read_the_api_without_credentials():
    headers = _answer("http://alice.hpclab.example.org:8000")
    assert headers["Access-Control-Allow-Origin"] == "http://alice.hpclab.example.org:8000"
    assert "PATCH" in headers["Access-Control-Allow-Methods"] and "Origin" in headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in headers  # a browser sends no hub cookie along


@pytest.mark.parametrize(
    "origin",
    [
        "http://hpclab.example.org:8000",  # the hub's own pages need no CORS
        "http://alice.hpclab.example.org:9999",  # another port
        "https://alice.hpclab.example.org:8000",  # another scheme
        "http://alice.hpclab.example.org.evil.net:8000",  # a look-alike
        "http://evilhpclab.example.org:8000",
        "http://a.b.hpclab.example.org:8000",  # two labels below: no user's
        "null",
    ],
)
def test_any_other_origin_gets_no_cors_headers(origin):
    assert "Access-Control-Allow-Origin" not in _answer(origin)


def test_only_the_api_answers_cross_origin():
    assert "Access-Control-Allow-Origin" not in _answer("http://alice.hpclab.example.org:8000", "/hub/home")


def test_a_labs_token_may_manage_the_shares_of_its_own_server_only():
    scopes = LabTokenScopes(SHARE_DIALOG_SCOPES)
    spawner = SimpleNamespace(user=SimpleNamespace(name="alice"), name="course")
    access = [f"custom:jupyter_server:{action}:*!server=alice/course" for action in ("read", "write", "execute")]
    assert scopes(spawner) == ["shares!server=alice/course", *access, "read:users:groups!user", *SHARE_DIALOG_SCOPES]
    assert "shares!user" not in scopes(spawner) and list(scopes) == SHARE_DIALOG_SCOPES  # what get_env writes


def test_a_share_with_the_read_scope_only_reads_and_one_without_any_edits():
    """What the server lets a visitor do (hpclab.share_access) from the scopes of their shares, theirs and their groups'."""
    read, write, execute = (f"{scope}!server=alice/" for scope in SERVER_ACCESS)
    shares = [
        {"user": {"name": "bob"}, "group": None, "scopes": ["access:servers!server=alice/", read]},
        {"user": None, "group": {"name": "tutors"}, "scopes": ["access:servers!server=alice/"]},
        {"user": {"name": "carol"}, "group": None, "scopes": ["access:servers!server=alice/", read, write]},
        {"user": {"name": "dave"}, "group": None, "scopes": ["access:servers!server=alice/", read, write, execute]},
    ]
    assert granted(shares, "bob", []) == {"read"}
    assert granted(shares, "bob", ["tutors"]) == {"read", "write", "execute"}  # his group's share edits
    assert granted(shares, "carol", []) == {"read", "write"}
    assert granted(shares, "dave", []) == {"read", "write", "execute"}
    assert granted(shares, "erin", ["gpu-users"]) is None  # no share of hers
