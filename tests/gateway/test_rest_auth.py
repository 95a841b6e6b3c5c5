"""Users and auth over a real server: register, login, refresh rotation, profile, admin rules, JWT attacks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import trio

from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.rest import admin_client, error_of, register


async def test_first_user_is_super_admin_then_users(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        alice = await register(gateway, "alice")
        bob = await register(gateway, "bob")
        me = (await alice.client.get("/api/auth/me")).json()
        assert me["role"] == "super_admin" and me["status"] == "active" and me["username"] == "alice"
        assert (await bob.client.get("/api/auth/me")).json()["role"] == "user"
        r = await bob.client.put("/api/auth/me", json={"nickname": "Bobby", "avatar": "https://x/a.png"})
        assert r.status_code == 200 and r.json()["nickname"] == "Bobby"
        r = await bob.client.put("/api/auth/me", json={"nickname": 5})
        assert r.status_code == 422
        assert error_of(r)["details"] == [{"loc": ["body", "nickname"], "message": "Expected `str | null`, got `int`"}]


async def test_register_and_login_errors(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        await register(gateway, "carol", "a good password")
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            dup = await anon.post("/api/auth/register", json={"username": "carol", "password": "another password"})
            assert dup.status_code == 409 and error_of(dup)["code"] == "USER_EXISTS"
            short = await anon.post("/api/auth/register", json={"username": "dave", "password": "short"})
            assert short.status_code == 422
            assert error_of(short)["details"][0]["loc"] == ["body", "password"]
            neither = await anon.post("/api/auth/register", json={"password": "long enough pw"})
            assert neither.status_code == 422
            bad_json = await anon.post(
                "/api/auth/login", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert bad_json.status_code == 400 and error_of(bad_json)["code"] == "INVALID_REQUEST"
            wrong = await anon.post("/api/auth/login", json={"username": "carol", "password": "wrong password"})
            assert wrong.status_code == 401 and error_of(wrong)["code"] == "INVALID_CREDENTIALS"
            nobody = await anon.post("/api/auth/login", json={"username": "nobody", "password": "wrong password"})
            assert nobody.status_code == 401 and error_of(nobody)["code"] == "INVALID_CREDENTIALS"
            ok = await anon.post("/api/auth/login", json={"username": "carol", "password": "a good password"})
            assert ok.status_code == 200 and ok.json()["tokens"]["token_type"] == "bearer"
            assert (await anon.get("/api/auth/me")).status_code == 401


async def test_refresh_rotates_and_reuse_revokes_the_family(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        user = await register(gateway, "erin")
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            first = await anon.post("/api/auth/refresh", json={"refresh_token": user.refresh})
            assert first.status_code == 200
            second_token = first.json()["refresh_token"]
            assert second_token != user.refresh
            # The stolen old token comes back: the whole family dies, including the newest token.
            reused = await anon.post("/api/auth/refresh", json={"refresh_token": user.refresh})
            assert reused.status_code == 401 and error_of(reused)["code"] == "REFRESH_TOKEN_REUSED"
            after = await anon.post("/api/auth/refresh", json={"refresh_token": second_token})
            assert after.status_code == 401
            unknown = await anon.post("/api/auth/refresh", json={"refresh_token": "nope"})
            assert unknown.status_code == 401 and error_of(unknown)["code"] == "INVALID_REFRESH_TOKEN"


def _secret(gw: RunningGateway) -> str:
    path = gw.runtime.paths.jwt_secret_file
    assert path.stat().st_mode & 0o777 == 0o600, "the signing secret is readable by its owner only"
    return path.read_text().strip()


async def test_jwt_attacks_are_refused(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        user = await register(gateway, "frank")
        await register(gateway, "grace")  # frank is the admin; grace is a plain user
        grace_login = await user.client.post(
            "/api/auth/login", json={"username": "grace", "password": "correct horse battery"}
        )
        grace_token = grace_login.json()["tokens"]["access_token"]
        claims = jwt.decode(grace_token, options={"verify_signature": False})
        now = int(time.time())
        secret = _secret(gateway)
        forged = {
            "alg none": jwt.encode({**claims}, key="", algorithm="none"),
            "wrong key": jwt.encode(claims, "not-the-secret-" * 4, algorithm="HS256"),
            "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"),
            "expired": jwt.encode({**claims, "iat": now - 100, "exp": now - 10}, secret, algorithm="HS256"),
            "other alg": jwt.encode(claims, secret, algorithm="HS512"),
        }
        # Tampered role: the payload is edited and the signature kept.
        head, _, sig = grace_token.split(".")
        tampered = jwt.utils.base64url_encode(
            json.dumps({**claims, "role": "super_admin"}, separators=(",", ":")).encode()
        ).decode()
        forged["tampered role"] = f"{head}.{tampered}.{sig}"
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            for name, token in forged.items():
                r = await anon.get("/api/admin/users", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 401, name
                assert r.headers["www-authenticate"] == "Bearer", name
            expired = await anon.get("/api/auth/me", headers={"Authorization": f"Bearer {forged['expired']}"})
            assert error_of(expired)["code"] == "TOKEN_EXPIRED"
            # The genuine token works but is not an admin's.
            r = await anon.get("/api/admin/users", headers={"Authorization": f"Bearer {grace_token}"})
            assert r.status_code == 403


async def test_admin_user_routes_and_their_rules(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        admin = await register(gateway, "heidi")
        user = await register(gateway, "ivan")
        r = await admin.client.get("/api/admin/users", params={"limit": 1})
        assert r.status_code == 200 and r.json()["total"] == 2 and len(r.json()["users"]) == 1
        assert (await admin.client.get("/api/admin/users", params={"limit": 0})).status_code == 422
        assert (await admin.client.get(f"/api/admin/users/{user.id}")).json()["username"] == "ivan"
        assert (await admin.client.get("/api/admin/users/nope")).status_code == 404
        me = await admin.client.put(f"/api/admin/users/{admin.id}/status", json={"status": "banned"})
        assert me.status_code == 403 and error_of(me)["code"] == "CANNOT_MODIFY_SELF"
        assert (await admin.client.delete(f"/api/admin/users/{admin.id}")).status_code == 403
        async with admin_client(gateway) as root:
            other_admin = await root.put(f"/api/admin/users/{admin.id}/status", json={"status": "banned"})
            assert other_admin.status_code == 403 and error_of(other_admin)["code"] == "CANNOT_MODIFY_ADMIN"
        bad = await admin.client.put(f"/api/admin/users/{user.id}/status", json={"status": "sleepy"})
        assert bad.status_code == 422 and error_of(bad)["details"][0]["loc"] == ["body", "status"]
        assert (await user.client.get("/api/auth/me")).status_code == 200
        # Inactive: refused at once and at login, and back in once active again.
        assert (await admin.client.put(f"/api/admin/users/{user.id}/status", json={"status": "inactive"})).is_success
        assert (await user.client.get("/api/auth/me")).status_code == 401
        ivan = {"username": "ivan", "password": "correct horse battery"}
        login = await admin.client.post("/api/auth/login", json=ivan)
        assert login.status_code == 403 and error_of(login)["code"] == "USER_INACTIVE"
        assert (await admin.client.put(f"/api/admin/users/{user.id}/status", json={"status": "active"})).is_success
        assert (await user.client.get("/api/auth/me")).status_code == 200
        banned = await admin.client.put(f"/api/admin/users/{user.id}/status", json={"status": "banned"})
        assert banned.status_code == 200
        # A banned user's access token stops working at once, and logging in says why.
        assert (await user.client.get("/api/auth/me")).status_code == 401
        login = await admin.client.post(
            "/api/auth/login", json={"username": "ivan", "password": "correct horse battery"}
        )
        assert login.status_code == 403 and error_of(login)["code"] == "USER_BANNED"
        assert (await admin.client.delete(f"/api/admin/users/{user.id}")).status_code == 200
        assert (await admin.client.get(f"/api/admin/users/{user.id}")).status_code == 404
        assert (await user.client.get("/api/admin/users")).status_code == 401


async def test_closed_registration_and_the_gateway_token(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, auth={"registration_open": False}))
    with trio.fail_after(30):
        await register(gw, "judy")  # the first user may always register: it becomes the admin
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            r = await anon.post("/api/auth/register", json={"username": "mallory", "password": "long enough pw"})
            assert r.status_code == 403 and error_of(r)["code"] == "REGISTRATION_CLOSED"
        async with admin_client(gw) as root:
            assert (await root.get("/api/admin/users")).status_code == 200
            assert error_of(await root.get("/api/auth/me"))["code"] == "NOT_A_USER"
        await gw.stop()


async def test_rate_limit_answers_429_with_retry_after(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, limits={"auth_burst": 2, "auth_per_minute": 1}))
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            codes = []
            for _ in range(3):
                r = await anon.post("/api/auth/login", json={"username": "x", "password": "wrong password"})
                codes.append(r.status_code)
        assert codes == [401, 401, 429]
        assert int(r.headers["retry-after"]) >= 1
        assert error_of(r)["details"]["retry_after"] == int(r.headers["retry-after"])
        await gw.stop()


def test_gateway_user_add_creates_a_super_admin(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[server]\ntoken = "{TOKEN}"\n')
    run = [sys.executable, "-m", "gateway", "user", "add", "root", "--password-stdin", "--config", str(cfg)]
    r = subprocess.run(run, input="a long password\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "a long password" not in r.stderr + r.stdout
    again = subprocess.run(run, input="a long password\n", capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already registered" in again.stderr

    from storage import users as users_db
    from storage.db import open_db

    conn = open_db(tmp_path / "data" / "gateway.db")
    user = users_db.find_user(conn, username="root", email=None)
    conn.close()
    assert user is not None and user.role == "super_admin" and user.password_hash.startswith("$argon2id$")


async def test_a_mistyped_gateway_token_is_not_called_an_expired_session(gateway: RunningGateway) -> None:
    typo = gateway.token[:-1] + ("x" if gateway.token[-1] != "x" else "y")
    bearer = {"Authorization": f"Bearer {typo}"}
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            r = await anon.get("/api/sessions", headers=bearer)
            assert r.status_code == 401 and error_of(r)["code"] == "INVALID_GATEWAY_TOKEN"
            message = error_of(r)["message"]
            assert "log in" not in message and "not the gateway token" in message and "`gateway token`" in message
            # The routes that take the gateway token only say the same, and tell a user's token apart.
            for path in ("/v1/runtime/connectors", "/files?path=/etc/hostname"):
                r = await anon.get(path, headers=bearer)
                assert r.status_code == 401 and "not the gateway token" in error_of(r)["message"], path
                assert "log in" not in error_of(r)["message"]
            user = await register(gateway, "heidi")
            async with user.client:
                r = await user.client.get("/v1/runtime/connectors")
            assert r.status_code == 401 and "gateway token only" in error_of(r)["message"]
            # A user's expired session is the one told to refresh or log in again.
            claims = jwt.decode(user.access, options={"verify_signature": False})
            now = int(time.time())
            expired = jwt.encode({**claims, "iat": now - 100, "exp": now - 10}, _secret(gateway), algorithm="HS256")
            r = await anon.get("/api/sessions", headers={"Authorization": f"Bearer {expired}"})
            assert error_of(r)["code"] == "TOKEN_EXPIRED" and "log in again" in error_of(r)["message"]
