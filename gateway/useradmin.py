"""`gateway user add`: create a super admin straight in the database (storage is synchronous; no server needed)."""

from __future__ import annotations

import getpass
import sys
import time

import nacl.pwhash

from gateway.authn import MEMLIMIT, OPSLIMIT
from gateway.config import Config, Paths
from storage import users as users_db
from storage.db import open_db


def add_user(config: Config, paths: Paths, *, username: str, email: str | None, password: str, role: str) -> str:
    """Insert the user (raises DuplicateUserError); return its id."""
    password_hash = nacl.pwhash.argon2id.str(password.encode(), opslimit=OPSLIMIT, memlimit=MEMLIMIT).decode()
    conn = open_db(paths.db_file, synchronous=config.storage.synchronous, key_file=paths.secrets_key_file)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            user = users_db.create_user(
                conn, username=username, email=email, password_hash=password_hash, role=role,
                now_ms=time.time_ns() // 1_000_000,
            )  # fmt: skip
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
    return user.id


def read_password(from_stdin: bool) -> str:
    """The password from stdin (one line, for scripts) or typed twice at a prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first
