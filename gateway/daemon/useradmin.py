"""`gateway user …`: the owner manages accounts straight in the database, whether the gateway runs or not.

Storage is synchronous, so no server is needed; with a gateway running, SQLite's WAL and `busy_timeout` let both
write, and the gateway reads a user's role and status from the database on every request, so a ban, a demotion or
a new password takes effect at the caller's next request.
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from gateway.config.file import Config, Paths
from gateway.daemon.jsonout import add_json_flag, print_json
from storage import users as users_db
from storage.clock import now_ms
from storage.db import open_db
from storage.users import DuplicateUserError, UserRow

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
MIN_PASSWORD = 8
T = TypeVar("T")


class UserAdminError(Exception):
    """The command cannot be done as asked; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def hash_password(password: str) -> str:
    import nacl.pwhash  # here, not at the top: every `gateway` command builds this module's parser

    from gateway.http.credentials import MEMLIMIT, OPSLIMIT

    return nacl.pwhash.argon2id.str(password.encode(), opslimit=OPSLIMIT, memlimit=MEMLIMIT).decode()


@contextmanager
def _db(config: Config, paths: Paths) -> Iterator[sqlite3.Connection]:
    conn = open_db(paths.db_file, synchronous=config.storage.synchronous, key_file=paths.secrets_key_file)
    try:
        yield conn
    finally:
        conn.close()


def _write(config: Config, paths: Paths, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` in one IMMEDIATE transaction (it waits up to busy_timeout for a running gateway's writer)."""
    with _db(config, paths) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result


def _find(conn: sqlite3.Connection, name: str) -> UserRow:
    user = users_db.find_user(conn, username=name, email=None) or users_db.find_user(conn, username=None, email=name)
    if user is None:
        raise UserAdminError(f"no user {name!r}; `gateway user list` shows them")
    return user


def add_user(
    config: Config, paths: Paths, *, username: str, email: str | None, password: str, role: str | None
) -> UserRow:
    """Insert the user (raises DuplicateUserError). Without `role`: super_admin when no admin exists yet, else user."""
    password_hash = hash_password(password)

    def create(conn: sqlite3.Connection) -> UserRow:
        chosen = role or ("super_admin" if users_db.count_admins(conn) == 0 else "user")
        return users_db.create_user(
            conn, username=username, email=email.lower() if email else None, password_hash=password_hash,
            role=chosen, now_ms=now_ms(),
        )  # fmt: skip

    return _write(config, paths, create)


def list_users(config: Config, paths: Paths) -> list[UserRow]:
    with _db(config, paths) as conn:
        rows, _ = users_db.list_users(conn, limit=1_000_000)
    return sorted(rows, key=lambda u: (u.created_at, u.id))


def _on_user(config: Config, paths: Paths, name: str, apply: Callable[[sqlite3.Connection, str], object]) -> UserRow:
    """Find the user called `name`, run `apply(conn, user_id)` in one transaction; return the row as it is after
    (as it was before, when `apply` deleted it)."""

    def change(conn: sqlite3.Connection) -> UserRow:
        user = _find(conn, name)
        apply(conn, user.id)
        return users_db.get_user(conn, user.id) or user

    return _write(config, paths, change)


def set_role(config: Config, paths: Paths, name: str, role: str) -> UserRow:
    return _on_user(config, paths, name, lambda c, uid: users_db.set_role(c, uid, role, now_ms=now_ms()))


def set_status(config: Config, paths: Paths, name: str, status: str) -> UserRow:
    """Ban, unban (active) or deactivate; leaving `active` revokes the user's refresh tokens."""
    return _on_user(config, paths, name, lambda c, uid: users_db.set_status(c, uid, status, now_ms=now_ms()))


def delete_user(config: Config, paths: Paths, name: str) -> UserRow:
    return _on_user(config, paths, name, users_db.delete_user)


def set_password(config: Config, paths: Paths, name: str, password: str) -> UserRow:
    """Reset anyone's password; every token the user held stops working."""
    password_hash = hash_password(password)
    return _on_user(config, paths, name, lambda c, uid: users_db.set_password(c, uid, password_hash, now_ms=now_ms()))


def make_invite(config: Config, paths: Paths, *, hours: float | None) -> tuple[str, int]:
    """A single-use invite code made by the owner, and when it expires (ms)."""
    ts = now_ms()
    expires_at = ts + int((hours * 3600 if hours is not None else config.auth.invite_ttl) * 1000)
    code = _write(config, paths, lambda c: users_db.create_invite(c, created_by=None, expires_at=expires_at, now_ms=ts))
    return code, expires_at


def read_password(from_stdin: bool) -> str:
    """The password from stdin (one line, for scripts) or typed twice at a prompt."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if not hmac.compare_digest(getpass.getpass("again: ").encode(), password.encode()):
            raise UserAdminError("the passwords differ", EXIT_USAGE)
    if len(password) < MIN_PASSWORD:
        raise UserAdminError(f"the password needs at least {MIN_PASSWORD} characters", EXIT_USAGE)
    return password


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _view(u: UserRow) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "role": u.role,
        "status": u.status,
        "created_at": _iso(u.created_at),
    }


def _label(u: UserRow) -> str:
    return u.username or u.email or u.id


def run(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    """Carry out `gateway user ACTION`; messages go to stderr, data (ids, codes, lists) to stdout."""
    say = _stderr
    action = args.action
    try:
        if action == "add":
            password = read_password(args.password_stdin)
            user = add_user(config, paths, username=args.name, email=args.email, password=password, role=args.role)
            say(f"user {args.name} ({user.role}) created")
            print(user.id)
        elif action == "list":
            users = list_users(config, paths)
            if args.json:
                print_json([_view(u) for u in users])
            elif not users:
                say("no users yet; `gateway user add NAME` makes the first (an admin)")
            else:
                rows = [("NAME", "ROLE", "STATUS", "EMAIL", "CREATED")]
                rows += [(_label(u), u.role, u.status, u.email or "-", _iso(u.created_at)) for u in users]
                widths = [max(len(r[i]) for r in rows) for i in range(4)]
                for r in rows:
                    print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[4])
        elif action == "role":
            user = set_role(config, paths, args.name, args.role)
            say(f"user {_label(user)} is now {user.role}")
        elif action in ("ban", "unban"):
            user = set_status(config, paths, args.name, "banned" if action == "ban" else "active")
            say(f"user {_label(user)} is now {user.status}")
        elif action == "delete":
            user = delete_user(config, paths, args.name)
            say(f"user {_label(user)} deleted")
        elif action == "passwd":
            password = read_password(args.password_stdin)
            user = set_password(config, paths, args.name, password)
            say(f"password of {_label(user)} changed; the sessions it had are signed out")
        elif action == "invite":
            code, expires_at = make_invite(config, paths, hours=args.hours)
            say(f'invite code (single use, until {_iso(expires_at)}; needs [auth] registration = "invite"):')
            print(code)
        else:  # argparse allows only the actions above
            raise UserAdminError(f"unknown action {action!r}")
    except UserAdminError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except DuplicateUserError as exc:
        say(f"error: {exc}")
        return EXIT_FAILURE
    return EXIT_OK


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `gateway user` actions as sub-commands of `parser`; `--config` may come before or after the action."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    # SUPPRESS: an action's own default must not overwrite a `--config` given before the action.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="as for `gateway user`")

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help_, description=help_)

    p = action("add", "make an account (the first one without --role is a super_admin, later ones users)")
    p.add_argument("name", help="the new user's name (3-32 letters, digits, _ . -)")
    p.add_argument("--email", help="the user's email")
    p.add_argument("--role", choices=users_db.ROLES, help="super_admin or user (default: see above)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = action("list", "list the accounts: name, role, status, email, created")
    add_json_flag(p, "print them as JSON for scripts")
    p = action("role", "change an account's role (the owner may demote any super_admin)")
    p.add_argument("name", help="username or email")
    p.add_argument("role", choices=users_db.ROLES)
    p = action("ban", "ban an account: its tokens stop working at its next request")
    p.add_argument("name", help="username or email")
    p = action("unban", "make a banned or inactive account active again")
    p.add_argument("name", help="username or email")
    p = action("delete", "delete an account")
    p.add_argument("name", help="username or email")
    p = action("passwd", "set anyone's password (their sessions are signed out)")
    p.add_argument("name", help="username or email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = action("invite", 'print a single-use invite code for [auth] registration = "invite"')
    p.add_argument("--hours", type=_hours, help="how long it lasts (default: [auth] invite_ttl, 7 days)")


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not 0 < value <= 90 * 24:
        raise argparse.ArgumentTypeError("an invite lasts more than 0 and at most 2160 hours (90 days)")
    return value
