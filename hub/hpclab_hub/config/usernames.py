"""One rule for hub user names on every path (sign-up, `hpclab-hub users add`, LDAP, OIDC).

A hub name becomes a Unix account name (``jupyter-<name>`` or the name itself), a URL part and an
HTML attribute, so it is normalised (Unicode NFKC, lower case) and must then match a narrow pattern.
"""

from __future__ import annotations

import re
import unicodedata

#: Longest Unix account name (useradd, glibc); a hub name plus the account prefix must fit.
UNIX_NAME_MAX = 32
#: Letters, digits, ``-``, ``_`` and ``.``; no leading dot, dash or digit-free oddities like ``..``.
USERNAME_PATTERN = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")


class InvalidUsername(ValueError):
    """The name cannot be a hub user; the message says why, in words a person can act on."""


def normalize_username(raw: str) -> str:
    """NFKC, then lower case, then surrounding whitespace removed: 'Ａlice ' and 'ALICE' are 'alice'."""
    return unicodedata.normalize("NFKC", raw).lower().strip()


def check_username(name: str, max_length: int = UNIX_NAME_MAX) -> str:
    """Return ``name`` normalised, or raise InvalidUsername naming what is wrong with it."""
    normal = normalize_username(name)
    if not normal:
        raise InvalidUsername("The user name is empty.")
    if normal.startswith("."):
        raise InvalidUsername("The user name must not start with a dot.")
    if not USERNAME_PATTERN.match(normal) or ".." in normal:
        raise InvalidUsername(
            "The user name may hold only letters a-z, digits, '-', '_' and '.' (no spaces, tabs or other characters)."
        )
    if len(normal) > max_length:
        raise InvalidUsername(f"The user name is too long: at most {max_length} characters.")
    return normal


def username_max_length(account_prefixes: list[str]) -> int:
    """Longest hub name that still fits a Unix account name behind the longest of these prefixes."""
    return UNIX_NAME_MAX - max((len(p) for p in account_prefixes), default=0)
