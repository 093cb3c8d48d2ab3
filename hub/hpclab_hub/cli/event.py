"""``hpclab-hub event create``: temporary native accounts for a hackathon or tutorial, in one group, until a date.

The accounts are approved at once; their names and passwords are printed once, as CSV, for the organisers (the
hub keeps only the hashes). At the end (ops/event_accounts.py, auth/event_expiry.py) they can no longer log in,
their sessions end and their servers stop; their files are kept.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

from jupyterhub import orm
from nativeauthenticator.orm import UserInfo

from hpclab_hub.auth.native import generate_password, set_account
from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.cli.usage import parse_date
from hpclab_hub.config.usernames import InvalidUsername, check_username, username_max_length
from hpclab_hub.hubconfig import secure_state_files
from hpclab_hub.ops import event_accounts

MOST = 1000


def _refuse(message: str) -> int:
    print(f"hpclab-hub event create: {message}", file=sys.stderr)
    return 2


def cmd_event_create(args: argparse.Namespace) -> int:
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    if deployment.auth.type != "native":
        return _refuse(
            f"event accounts are native accounts; with auth.type {deployment.auth.type} make the event a group "
            "of your identity provider and name it in the profiles' groups"
        )
    if not 1 <= args.accounts <= MOST:
        return _refuse(f"--accounts must be between 1 and {MOST}, not {args.accounts}")
    try:
        until = parse_date(args.until, "--until")
    except ValueError as invalid:
        return _refuse(str(invalid))
    longest, names = username_max_length(deployment.account_prefixes), []
    for candidate in [f"{args.name}-{i:0{len(str(args.accounts))}d}" for i in range(1, args.accounts + 1)] + [args.group]:
        try:
            names.append(check_username(candidate, longest))
        except InvalidUsername as invalid:
            return _refuse(f"{candidate!r}: {invalid}")
    group = names.pop()
    if until <= time.time():
        return _refuse(f"--until {args.until} is in the past")
    secure_state_files(deployment)
    db = orm.new_session_factory(deployment.hub.database_url)()
    existing = sorted({n for n in names if UserInfo.find(db, n) or orm.User.find(db, n)} | set(event_accounts.taken(db, names)))
    if existing:
        return _refuse(f"accounts already exist: {', '.join(existing)}; choose another event name")
    rows = []
    hub_group = orm.Group.find(db, group) or orm.Group(name=group)
    db.add(hub_group)
    for name in names:
        password = generate_password()
        set_account(db, name, password)
        user = orm.User(name=name)
        db.add(user)
        hub_group.users.append(user)
        rows.append((name, password))
    db.commit()
    event_accounts.add_accounts(db, args.name, group, until, names)
    ends = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
    out = open(args.out, "w", newline="", opener=lambda p, f: os.open(p, f, 0o600)) if args.out else sys.stdout
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["username", "password", "group", "until"])
    writer.writerows([name, password, group, ends] for name, password in rows)
    if args.out:
        out.close()
    print(
        f"event {args.name}: {len(rows)} accounts in group {group} until {ends}" + (f"; CSV in {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0
