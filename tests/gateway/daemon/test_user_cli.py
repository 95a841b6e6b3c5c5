"""`gateway user …` through real processes: with no gateway running, and beside a running one over real sockets."""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import nacl.exceptions
import nacl.pwhash

from tests.gateway.harness import Site

PASSWORD = "a long password"


def _user(site: Site, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = site.argv("user", *args)
    return subprocess.run(argv, env=site.env, input=password, capture_output=True, text=True, timeout=60)


def _users(site: Site) -> dict[str, dict[str, str]]:
    r = _user(site, "list", "--json")
    assert r.returncode == 0, r.stderr
    return {u["username"]: u for u in json.loads(r.stdout)}


def test_user_commands_without_a_running_gateway(tmp_path: Path) -> None:
    site = Site(tmp_path)
    r = _user(site, "list")
    assert r.returncode == 0 and "no users yet" in r.stderr
    r = _user(site, "add", "root", "--password-stdin", password=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "root (super_admin) created" in r.stderr  # the first account without --role is the admin
    assert PASSWORD not in r.stderr + r.stdout
    again = _user(site, "add", "root", "--password-stdin", password=PASSWORD + "\n")
    assert again.returncode == 1 and "already registered" in again.stderr
    r = _user(site, "add", "bob", "--email", "Bob@Example.org", "--password-stdin", password=PASSWORD + "\n")
    assert r.returncode == 0 and "bob (user) created" in r.stderr
    short = _user(site, "add", "carl", "--password-stdin", password="short\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    users = _users(site)
    assert {n: (u["role"], u["status"]) for n, u in users.items()} == {
        "root": ("super_admin", "active"),
        "bob": ("user", "active"),
    }
    assert users["bob"]["email"] == "bob@example.org" and "password_hash" not in users["bob"]
    table = _user(site, "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ROLE", "STATUS", "EMAIL", "CREATED"] and len(table) == 3
    # --config may come before the action too.
    before = subprocess.run(
        [*site.command, "user", "--config", str(site.config_file), "list", "--json"],
        env=site.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert before.returncode == 0 and len(json.loads(before.stdout)) == 2

    assert _user(site, "role", "bob@example.org", "super_admin").returncode == 0  # by email as well
    assert _user(site, "role", "root", "user").returncode == 0  # the owner demotes any admin
    assert _user(site, "ban", "bob").returncode == 0
    assert _users(site)["bob"]["status"] == "banned"
    assert _user(site, "unban", "bob").returncode == 0
    assert {n: (u["role"], u["status"]) for n, u in _users(site).items()} == {
        "root": ("user", "active"),
        "bob": ("super_admin", "active"),
    }
    missing = _user(site, "ban", "nobody")
    assert missing.returncode == 1 and "no user 'nobody'" in missing.stderr and "gateway user list" in missing.stderr
    assert _user(site, "role", "bob", "king").returncode == 2  # argparse: not a role
    assert _user(site, "passwd", "bob", "--password-stdin", password="another long one\n").returncode == 0
    code = _user(site, "invite", "--hours", "2")
    assert code.returncode == 0 and len(code.stdout.strip()) >= 20 and "single use" in code.stderr
    assert _user(site, "invite", "--hours", "0").returncode == 2
    assert _user(site, "delete", "root").returncode == 0
    assert set(_users(site)) == {"bob"}
    db = site.paths.db_file
    assert db.stat().st_mode & 0o777 == 0o600


def test_user_commands_act_on_a_running_gateway(tmp_path: Path) -> None:
    site = Site(tmp_path, GATEWAY_AUTH_REGISTRATION="invite")
    try:
        site.spawn("serve")
        url = site.wait_serving().url
        assert url is not None
        token = site.paths.token_file.read_text().strip()
        assert _user(site, "add", "admin", "--password-stdin", password=PASSWORD + "\n").returncode == 0
        assert _user(site, "add", "eve", "--role", "user", "--password-stdin", password=PASSWORD + "\n").returncode == 0
        with httpx.Client(base_url=url, timeout=30) as http:

            def login(name: str, password: str = PASSWORD) -> httpx.Response:
                return http.post("/api/auth/login", json={"username": name, "password": password})

            admin = {"Authorization": f"Bearer {login('admin').json()['tokens']['access_token']}"}
            eve = {"Authorization": f"Bearer {login('eve').json()['tokens']['access_token']}"}
            assert http.get("/api/admin/users", headers=admin).json()["total"] == 2
            # Demoted on the machine: the next request has the new role.
            assert _user(site, "role", "admin", "user").returncode == 0
            assert http.get("/api/admin/users", headers=admin).status_code == 403
            # Banned on the machine: the token it already holds stops working, and so does logging in.
            assert _user(site, "ban", "eve").returncode == 0
            assert http.get("/api/auth/me", headers=eve).status_code == 401
            assert login("eve").json()["error"]["code"] == "USER_BANNED"
            assert _user(site, "unban", "eve").returncode == 0
            assert login("eve").status_code == 200
            # A new password from the machine signs the account out everywhere.
            assert _user(site, "passwd", "admin", "--password-stdin", password="a brand new one\n").returncode == 0
            assert http.get("/api/auth/me", headers=admin).status_code == 401
            assert login("admin").status_code == 401 and login("admin", "a brand new one").status_code == 200
            # An invite made on the machine registers one plain account, once.
            code = _user(site, "invite").stdout.strip()
            body = {"username": "newbie", "password": PASSWORD, "invite_code": code}
            made = http.post("/api/auth/register", json=body)
            assert made.status_code == 201 and made.json()["user"]["role"] == "user"
            assert http.post("/api/auth/register", json={**body, "username": "newbie2"}).status_code == 403
            assert _user(site, "delete", "newbie").returncode == 0
            owner = {"Authorization": f"Bearer {token}"}
            names = {u["username"] for u in http.get("/api/admin/users", headers=owner).json()["users"]}
            assert names == {"admin", "eve"}
    finally:
        site.cleanup()


def _on_a_terminal(argv: list[str], env: dict[str, str], answers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Run `argv` with a pseudo-terminal as its controlling terminal (getpass reads /dev/tty); each answer is
    typed once its prompt has been shown. Returns the exit code and everything the terminal showed."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the new session's controlling terminal: /dev/tty is the pty

    proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=take_the_terminal)  # fmt: skip
    os.close(slave)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0] in shown:
                prompt, answer = pending.pop(0)
                shown = shown.replace(prompt, b"<" + prompt.strip() + b">", 1)  # each prompt answered once
                os.write(master, answer)
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        return proc.wait(timeout=60), shown
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _password_is(site: Site, name: str, password: str) -> bool:
    with sqlite3.connect(site.paths.db_file) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users WHERE username = ?", (name,)).fetchone()
    try:
        return bool(nacl.pwhash.verify(stored.encode(), password.encode()))
    except nacl.exceptions.InvalidkeyError:
        return False


def test_passwd_asks_twice_at_a_terminal_and_echoes_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path)
    assert _user(site, "add", "bob", "--password-stdin", password=PASSWORD + "\n").returncode == 0
    new = "typed at the terminal"
    typed = new.encode() + b"\n"
    code, shown = _on_a_terminal(
        site.argv("user", "passwd", "bob"), site.env, [(b"password: ", typed), (b"again: ", typed)]
    )
    assert code == 0, shown
    assert b"<password:>" in shown and b"<again:>" in shown
    assert new.encode() not in shown, "the password is never echoed"
    assert _password_is(site, "bob", new) and not _password_is(site, "bob", PASSWORD)

    differ = [(b"password: ", b"first long one\n"), (b"again: ", b"second long one\n")]
    code, shown = _on_a_terminal(site.argv("user", "passwd", "bob"), site.env, differ)
    assert code == 2 and b"the passwords differ" in shown
    assert _password_is(site, "bob", new), "a refused change leaves the password as it was"
