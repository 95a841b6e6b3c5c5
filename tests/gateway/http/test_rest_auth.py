"""Users and auth over a real server: registration modes, login, refresh rotation, profile, password, admin rules,
JWT attacks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.rest import admin_client, error_of, login, register


async def test_accounts_made_by_the_owner_and_their_profile(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        alice = await register(gateway, "alice", role="super_admin")
        bob = await register(gateway, "bob", role="user")
        me = (await alice.client.get("/api/auth/me")).json()
        assert me["role"] == "super_admin" and me["status"] == "active" and me["username"] == "alice"
        assert (await bob.client.get("/api/auth/me")).json()["role"] == "user"
        r = await bob.client.put("/api/auth/me", json={"nickname": "Bobby", "avatar": "https://x/a.png"})
        assert r.status_code == 200 and r.json()["nickname"] == "Bobby"
        r = await bob.client.put("/api/auth/me", json={"nickname": 5})
        assert r.status_code == 422
        assert error_of(r)["details"] == [{"loc": ["body", "nickname"], "message": "Expected `str | null`, got `int`"}]


async def test_registration_is_closed_by_default_even_for_the_first_stranger(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            r = await anon.post("/api/auth/register", json={"username": "mallory", "password": "long enough pw"})
            assert r.status_code == 403 and error_of(r)["code"] == "REGISTRATION_CLOSED"
            assert "gateway user add" in error_of(r)["message"]
        async with admin_client(gateway) as owner:
            assert (await owner.get("/api/admin/users")).json()["total"] == 0  # nothing was made


async def test_open_registration_never_makes_an_admin(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, auth={"registration": "open"}))
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            first = await anon.post("/api/auth/register", json={"username": "first", "password": "long enough pw"})
            assert first.status_code == 201 and first.json()["user"]["role"] == "user"
            token = first.json()["tokens"]["access_token"]
            r = await anon.get("/api/admin/users", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 403
            # No field of the body makes an admin either.
            sneaky = {"username": "second", "password": "long enough pw", "role": "super_admin"}
            r = await anon.post("/api/auth/register", json=sneaky)
            assert r.status_code == 422
        await gw.stop()


async def test_invite_registration_consumes_the_code_once(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, auth={"registration": "invite"}))
    with trio.fail_after(30):
        admin = await register(gw, "boss", role="super_admin")
        plain = await register(gw, "pleb", role="user")
        assert (await plain.client.post("/api/admin/invites", json={})).status_code == 403
        made = await admin.client.post("/api/admin/invites", json={"expires_in": 3600})
        assert made.status_code == 201, made.text
        code = made.json()["code"]
        async with admin_client(gw) as owner:
            also = await owner.post("/api/admin/invites", json={})
            assert also.status_code == 201 and also.json()["code"] != code
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            body = {"username": "newbie", "password": "long enough pw"}
            r = await anon.post("/api/auth/register", json=body)
            assert r.status_code == 403 and error_of(r)["code"] == "INVITE_REQUIRED"
            r = await anon.post("/api/auth/register", json={**body, "invite_code": "made-up-code"})
            assert r.status_code == 403 and error_of(r)["code"] == "INVALID_INVITE"
            r = await anon.post("/api/auth/register", json={**body, "invite_code": code})
            assert r.status_code == 201 and r.json()["user"]["role"] == "user"
            again = await anon.post("/api/auth/register", json={**body, "username": "twice", "invite_code": code})
            assert again.status_code == 403 and error_of(again)["code"] == "INVALID_INVITE"
        async with admin_client(gw) as owner:
            names = {u["username"] for u in (await owner.get("/api/admin/users")).json()["users"]}
        assert names == {"boss", "pleb", "newbie"}  # the refused attempts left no account behind
        await gw.stop()


async def test_register_and_login_errors(nursery: trio.Nursery, tmp_path: Path) -> None:
    gateway = await start_gateway(nursery, *make_config(tmp_path, auth={"registration": "open"}))
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
        await gateway.stop()


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
        r = await admin.client.get("/api/admin/users", params={"limit": 1, "skip": 1})
        assert [u["username"] for u in r.json()["users"]] != []
        assert (await admin.client.get("/api/admin/users", params={"limit": 0})).status_code == 422
        assert (await admin.client.get(f"/api/admin/users/{user.id}")).json()["username"] == "ivan"
        assert (await admin.client.get("/api/admin/users/nope")).status_code == 404
        me = await admin.client.put(f"/api/admin/users/{admin.id}/status", json={"status": "banned"})
        assert me.status_code == 403 and error_of(me)["code"] == "CANNOT_MODIFY_SELF"
        assert (await admin.client.delete(f"/api/admin/users/{admin.id}")).status_code == 403
        second = await register(gateway, "judy", role="super_admin")
        other_admin = await admin.client.put(f"/api/admin/users/{second.id}/status", json={"status": "banned"})
        assert other_admin.status_code == 403 and error_of(other_admin)["code"] == "CANNOT_MODIFY_ADMIN"
        assert (await admin.client.delete(f"/api/admin/users/{second.id}")).status_code == 403
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


async def test_legacy_registration_open_setting_and_the_gateway_token(nursery: trio.Nursery, tmp_path: Path) -> None:
    # `registration_open = true` from before `registration` existed still means "open", never "admin".
    gw = await start_gateway(nursery, *make_config(tmp_path, auth={"registration_open": True}))
    assert gw.runtime.config.auth.registration == "open"
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            r = await anon.post("/api/auth/register", json={"username": "judy", "password": "long enough pw"})
            assert r.status_code == 201 and r.json()["user"]["role"] == "user"
        async with admin_client(gw) as root:
            assert (await root.get("/api/admin/users")).status_code == 200
            assert error_of(await root.get("/api/auth/me"))["code"] == "NOT_A_USER"
        await gw.stop()


async def test_the_owner_demotes_and_bans_a_second_super_admin(gateway: RunningGateway) -> None:
    # Issue 15 item 16: with two admins, neither may touch the other, but the gateway token may touch both.
    with trio.fail_after(30):
        first = await register(gateway, "ada", role="super_admin")
        second = await register(gateway, "bea", role="super_admin")
        r = await first.client.put(f"/api/admin/users/{second.id}/role", json={"role": "user"})
        assert r.status_code == 403 and error_of(r)["code"] == "OWNER_ONLY"
        r = await first.client.post("/api/admin/users", json={"username": "cat", "password": "long enough pw",
                                                               "role": "super_admin"})  # fmt: skip
        assert r.status_code == 403 and error_of(r)["code"] == "OWNER_ONLY"
        r = await first.client.post("/api/admin/users", json={"username": "cat", "password": "long enough pw"})
        assert r.status_code == 201 and r.json()["role"] == "user"  # an admin still makes plain accounts
        async with admin_client(gateway) as owner:
            r = await owner.put(f"/api/admin/users/{second.id}/role", json={"role": "user"})
            assert r.status_code == 200 and r.json()["role"] == "user"
            assert (await second.client.get("/api/admin/users")).status_code == 403  # at its very next request
            r = await owner.put(f"/api/admin/users/{first.id}/status", json={"status": "banned"})
            assert r.status_code == 200
            assert (await first.client.get("/api/auth/me")).status_code == 401
            assert (await owner.put(f"/api/admin/users/{second.id}/role", json={"role": "boss"})).status_code == 422
            assert (await owner.delete(f"/api/admin/users/{first.id}")).status_code == 200


async def test_changing_your_own_password(gateway: RunningGateway) -> None:
    with trio.fail_after(60):
        user = await register(gateway, "pat", "the old password")
        other_device = await login(gateway, "pat", "the old password")
        r = await user.client.put("/api/auth/me/password", json={"current_password": "wrong one",
                                                                  "new_password": "the new password"})  # fmt: skip
        assert r.status_code == 401 and error_of(r)["code"] == "INVALID_CREDENTIALS"
        r = await user.client.put("/api/auth/me/password", json={"current_password": "the old password",
                                                                  "new_password": "short"})  # fmt: skip
        assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body", "new_password"]
        r = await user.client.put("/api/auth/me/password", json={"current_password": "the old password",
                                                                  "new_password": "the new password"})  # fmt: skip
        assert r.status_code == 200, r.text
        fresh = r.json()["access_token"]
        # Every token issued before the change stops working: this one, the other device's, their refresh tokens.
        assert error_of(await user.client.get("/api/auth/me"))["code"] == "TOKEN_REVOKED"
        assert (await other_device.client.get("/api/auth/me")).status_code == 401
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            assert (
                await anon.post("/api/auth/refresh", json={"refresh_token": other_device.refresh})
            ).status_code == 401
            ok = await anon.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh}"})
            assert ok.status_code == 200 and ok.json()["username"] == "pat"
            old = await anon.post("/api/auth/login", json={"username": "pat", "password": "the old password"})
            assert old.status_code == 401
            assert (await login(gateway, "pat", "the new password")).id == user.id
        async with admin_client(gateway) as owner:
            r = await owner.put("/api/auth/me/password", json={"current_password": "x", "new_password": "long enough"})
            assert r.status_code == 403 and error_of(r)["code"] == "NOT_A_USER"


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
            assert r.status_code == 403 and error_of(r)["code"] == "OWNER_ONLY"
            # A user's expired session is the one told to refresh or log in again.
            claims = jwt.decode(user.access, options={"verify_signature": False})
            now = int(time.time())
            expired = jwt.encode({**claims, "iat": now - 100, "exp": now - 10}, _secret(gateway), algorithm="HS256")
            r = await anon.get("/api/sessions", headers={"Authorization": f"Bearer {expired}"})
            assert error_of(r)["code"] == "TOKEN_EXPIRED" and "log in again" in error_of(r)["message"]
