"""``hpclab-hub users add``: an approved local account created or its password reset (auth.type: native)."""

from __future__ import annotations

import argparse
import getpass
import sys

from jupyterhub import orm
from nativeauthenticator.orm import UserInfo  # noqa: F401  (registers the table)

from hpclab_hub.auth.native import generate_password, set_account
from hpclab_hub.backends.local.trial import trial_refusal, trial_user
from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.config.usernames import InvalidUsername, check_username, username_max_length
from hpclab_hub.hubconfig import secure_state_files


def cmd_users_add(args: argparse.Namespace) -> int:
    """Create (or reset) an approved local account in the hub database."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    try:
        args.name = check_username(args.name, username_max_length(deployment.account_prefixes))
    except InvalidUsername as invalid:
        print(f"hpclab-hub: {invalid}", file=sys.stderr)
        return 1
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.name} (empty: generate one): ")
    else:
        password = ""
    generated = not password
    password = password or generate_password()
    if len(password) < deployment.auth.native.minimum_password_length:
        print(f"hpclab-hub: password too short (minimum {deployment.auth.native.minimum_password_length}).", file=sys.stderr)
        return 1
    secure_state_files(deployment)
    db = orm.new_session_factory(deployment.hub.database_url)()
    created = set_account(db, args.name, password)
    print(f"{'created' if created else 'updated'} account {args.name}" + (f"; password: {password}" if generated else ""))
    only = trial_user(deployment)
    if only and args.name != only:
        print(
            f"hpclab-hub: note: {args.name} cannot log in while the hub runs without root. {trial_refusal(only)}", file=sys.stderr
        )
    return 0
