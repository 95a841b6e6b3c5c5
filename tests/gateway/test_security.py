"""Security sweeps: canary secrets never leak, tokens are compared in constant time, every route needs auth."""

from __future__ import annotations

import ast
import inspect
import re
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import auth, crypto
from gateway.asgi import all_routes
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, fake_server, put, wait_for
from tests.gateway.crashkit import spawn

ROOT = Path(__file__).resolve().parents[2]
SENSITIVE = re.compile(r"token|secret|password|passwd|signature|proof|digest|hmac|api_?key|credential", re.I)
REFERENCE = re.compile(r"_ref$")  # the *name* of a secret slot (`secret_ref`), compared like any other name

# ---- constant-time comparison ----


def _names(node: ast.AST) -> Iterator[str]:
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            yield n.id
        elif isinstance(n, ast.Attribute):
            yield n.attr


def _leaky_comparisons() -> list[str]:
    """`a == b` / `a != b` where neither side is a literal and a side names a token, secret, proof..."""
    found = []
    for package in ("gateway", "actors", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Compare):
                    continue
                left = node.left
                for op, right in zip(node.ops, node.comparators, strict=True):
                    sides = (left, right)
                    left = right
                    if not isinstance(op, ast.Eq | ast.NotEq) or any(isinstance(s, ast.Constant) for s in sides):
                        continue
                    if any(SENSITIVE.search(n) and not REFERENCE.search(n) for side in sides for n in _names(side)):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_token_or_secret_is_compared_with_equality() -> None:
    assert _leaky_comparisons() == []


def test_the_comparison_helpers_use_hmac_compare_digest() -> None:
    assert "hmac.compare_digest" in inspect.getsource(auth.token_matches)
    assert "hmac.compare_digest" in inspect.getsource(crypto.proofs_match)
    assert auth.token_matches("a" * 30, "a" * 30) and not auth.token_matches("a" * 30, "b" * 30)
    assert not auth.token_matches(None, "x") and not auth.token_matches("", "x")


def test_the_ast_check_finds_a_leaky_comparison(tmp_path: Path) -> None:
    # The check above must be able to fail: the same walk over a line that compares a token with `==`.
    tree = ast.parse("if presented_token == expected:\n    pass\nif kind == 'bearer':\n    pass\n")
    hits = [n for n in ast.walk(tree) if isinstance(n, ast.Compare) and not isinstance(n.comparators[0], ast.Constant)]
    assert [SENSITIVE.search(" ".join(_names(h))) is not None for h in hits] == [True]


# ---- no route without auth ----

OPEN = {
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/docs/{name}"),
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
}
SHARED = "ext-shared-token-for-auth-sweep-01"
BEARER = "http-bearer-token-for-auth-sweep-1"


def _is_open(method: str, path: str) -> bool:
    # The web UI's page and static assets are public (the UI then logs in).
    return (method, path) in OPEN or path == "/" or path.startswith(("/assets", "/static"))


def _fill(path: str, **values: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x1"), path)


async def test_every_route_refuses_a_caller_without_credentials(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(60):
        async with admin(gw) as a:
            assert (await put(a, "external", "ext", {"shared_token": {"value": SHARED}})).status_code == 201
            assert (await put(a, "http", "locked", {"bearer_token": {"value": BEARER}})).status_code == 201
            r = await put(a, "http", "open", {"allow_unauthenticated_ingress": True})
            assert r.status_code == 201, r.text
        probed = 0
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as c:
            for route in all_routes():
                if not isinstance(route, Route):
                    continue  # /ws: its auth phase is tested in test_ws.py
                for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
                    kinds = ["http"] if "{kind}" in route.path else [""]
                    names = ["locked", "ext"] if "{name}" in route.path else [""]
                    for kind in kinds:
                        for name in names:
                            url = _fill(route.path, kind=kind, name=name)
                            for headers in ({}, {"Authorization": "Bearer not-a-valid-token-at-all"}):
                                r = await c.request(method, url, headers=headers, json={"content": "hi"})
                                probed += 1
                                assert r.status_code != 500, (method, url, r.text)
                                if _is_open(method, route.path):
                                    continue
                                # 401: no valid credential. 404: no such connector behind an ingress route.
                                assert r.status_code in (401, 404), (method, url, r.status_code, r.text)
                                if "/external/ext/" in url or url.endswith("/http/locked"):
                                    assert r.status_code == 401, (method, url, r.text)
            # The one ingress route open by configuration accepts an event without credentials.
            r = await c.post("/v1/connectors/http/open", json={"binding_keys": ["b"], "content": "hello"})
            assert r.status_code == 202, r.text
            # A route no one registered is 404, not a way around authentication.
            assert (await c.get("/api/definitely-not-a-route")).status_code == 404
    assert probed > 100
    with trio.fail_after(10):
        await gw.stop()


# ---- canary secrets ----

CANARIES = {
    "gateway_token": "gwtoken-CANARY-5e1f0b7a9c3d4e2f8a6b",
    "openai_api_key": "sk-CANARY-openai-4b9d2e7f1a3c5e8d0b6a",
    "external_shared": "ext-CANARY-shared-8c2e4a6f0b1d3e5f7a9c",
    "http_bearer": "http-CANARY-bearer-1f3e5d7c9b0a2e4d6f8a",
    "telegram_bot": "123456:CANARY-telegram-bot-7e9c1a3e5f7b9d0c",
    "slack_signing": "slack-CANARY-signing-2d4f6b8d0e1c3a5e7f9b",
    "user_password": "pw-CANARY-user-6a8c0e2f4b6d8f0a1c3e",
}


def _leaks(text: str) -> list[str]:
    return [name for name, value in CANARIES.items() if value in text]


@pytest.mark.slow
async def test_canary_secrets_never_appear_in_responses_logs_tracebacks_or_the_database(tmp_path: Path) -> None:
    seen: list[str] = []  # every response: status line, headers, body

    async def openai_refuses(request: Request) -> Response:
        # Like a real upstream, the error echoes what it was sent: the gateway must not pass it on verbatim.
        return JSONResponse(
            {"error": {"message": f"Incorrect API key provided: {request.headers.get('authorization')}"}}, 401
        )

    async def telegram_refuses(request: Request) -> Response:
        return JSONResponse(
            {"ok": False, "error_code": 401, "description": f"Unauthorized for {request.url.path}"}, 401
        )

    routes = [
        Route("/v1/chat/completions", openai_refuses, methods=["POST"]),
        Route("/v1/models", openai_refuses, methods=["GET"]),
        Route("/{path:path}", telegram_refuses, methods=["GET", "POST"]),
    ]
    data = tmp_path / "data"
    log_file = tmp_path / "gateway.log"
    output = bytearray()
    with trio.fail_after(90):
        async with fake_server(routes) as upstream, trio.open_nursery() as nursery:
            config = tmp_path / "config.toml"
            config.write_text(
                f'[server]\nhost = "127.0.0.1"\nport = 0\ntoken = "{CANARIES["gateway_token"]}"\n'
                f'[storage]\ndata_dir = "{data}"\n'
                f'[log]\nlevel = "debug"\nfile = "{log_file}"\n'
                '[agent]\nprovider = "openai"\n'
                f'[providers.openai]\nbase_url = "{upstream}/v1"\napi_key = "{CANARIES["openai_api_key"]}"\n'
                "max_retries = 0\n"
            )
            gw = await spawn(config, nursery, tmp_path, output=output)
            token = CANARIES["gateway_token"]
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as c:

                async def call(method: str, url: str, **kw: Any) -> httpx.Response:
                    try:
                        r = await c.request(method, url, **kw)
                    except httpx.RemoteProtocolError:
                        # A keep-alive connection the server closed after an answer that left the request body
                        # unread (hypercorn cannot reuse it): the client's race, not the route's. Send again.
                        r = await c.request(method, url, **kw)
                    seen.append(f"{method} {url} {r.status_code}\n{r.headers}\n{r.text}")
                    return r

                bearer = {"Authorization": f"Bearer {token}"}
                connectors: list[tuple[str, str, dict[str, Any]]] = [
                    ("external", "ext", {"shared_token": {"value": CANARIES["external_shared"]}}),
                    ("http", "hooks", {"bearer_token": {"value": CANARIES["http_bearer"]}}),
                    (
                        "telegram",
                        "tg",
                        {
                            "bot_token": {"value": CANARIES["telegram_bot"]},
                            "ingress_mode": "polling",
                            "api_base_url": upstream,
                        },
                    ),
                    ("slack", "sl", {"signing_secret": {"value": CANARIES["slack_signing"]}}),
                ]
                for kind, name, body in connectors:
                    r = await call("PUT", f"/v1/runtime/connectors/{kind}/{name}", json=body, headers=bearer)
                    assert r.status_code in (200, 201), r.text
                    # Rotations, and a bad secret input (env combined with value) that must be refused politely.
                    await call("PUT", f"/v1/runtime/connectors/{kind}/{name}", json=body, headers=bearer)
                    bad = {k: {"value": v["value"], "env": "NOPE"} for k, v in body.items() if isinstance(v, dict)}
                    await call("PUT", f"/v1/runtime/connectors/{kind}/{name}", json=bad, headers=bearer)
                # Users: register with the canary password, log in right and wrong.
                pw = CANARIES["user_password"]
                await call("POST", "/api/auth/register", json={"username": "alice", "password": pw})
                r = await call("POST", "/api/auth/login", json={"username": "alice", "password": pw})
                await call("POST", "/api/auth/login", json={"username": "alice", "password": pw + "x"})
                await call("POST", "/api/auth/login", json={"username": "alice", "password": pw[:5]})
                await call("POST", "/api/auth/register", json={"username": "alice", "password": pw})
                user = {"Authorization": f"Bearer {r.json()['tokens']['access_token']}"} if r.status_code == 200 else {}
                # Turns that fail upstream (the key is refused), through every way in.
                await call("POST", "/api/message/sync", json={"text": "hi", "message": "hi"}, headers=bearer)
                await call(
                    "POST",
                    "/v1/chat/completions",
                    json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                    headers=bearer,
                )
                await call("POST", "/v1/connectors/external/ext/events", json={"event_id": "e1", "content": "hi"})
                await call(
                    "POST",
                    "/v1/connectors/external/ext/events",
                    json={"event_id": "e2", "thread": {"path": ["a"]}, "content": "hi"},
                    headers={"Authorization": f"Bearer {CANARIES['external_shared']}"},
                )
                await call(
                    "POST",
                    "/v1/connectors/http/hooks",
                    json={"binding_keys": ["k"], "content": "hi"},
                    headers={"Authorization": f"Bearer {CANARIES['http_bearer']}"},
                )
                await call(
                    "POST",
                    "/v1/connectors/slack/sl",
                    content=b'{"type":"event_callback"}',
                    headers={"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=00"},
                )
                # Every route, as admin, as a user, with junk: whatever it answers must hold no secret.
                for route in all_routes():
                    if not isinstance(route, Route):
                        continue
                    for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
                        url = _fill(route.path, kind="telegram", name="tg", slot="connectors/telegram/tg/bot_token")
                        if url.endswith("/events") or "/stream" in url:
                            continue
                        for headers in (bearer, user):
                            await call(method, url, headers=headers, json={"junk": [1, 2, 3]})
                for url in (
                    "/v1/runtime/connectors",
                    "/v1/runtime/secrets",
                    "/api/status",
                    "/api/logs?level=debug&limit=2000",
                ):
                    await call("GET", url, headers=bearer)

                # Wait for the polling connector and the failed turns to have reported their errors.
                async def reported() -> bool:
                    r = await c.get("/api/status", headers=bearer)
                    return "error" in r.text and log_file.exists() and log_file.stat().st_size > 0

                await wait_for(reported, timeout=30, interval=0.1)
                await call("GET", "/api/status", headers=bearer)
                await call("GET", "/api/logs?level=debug&limit=2000", headers=bearer)
            gw.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                await gw.process.wait()
            nursery.cancel_scope.cancel()
    assert len(seen) > 100
    for text in seen:
        assert not _leaks(text), (_leaks(text), text[:2000])
    logs = log_file.read_text()
    assert "Traceback" in logs or "error" in logs.lower()  # the sweep did reach error paths
    assert not _leaks(logs), [line for line in logs.splitlines() if _leaks(line)][:5]
    out = output.decode(errors="replace")
    assert not _leaks(out), [line for line in out.splitlines() if _leaks(line)][:5]
    db = sqlite3.connect(data / "gateway.db")
    try:
        secret_tables = {"secrets"}
        dump = "\n".join(
            line for line in db.iterdump() if not any(f'"{t}"' in line or f" {t} " in line for t in secret_tables)
        )
        # The canaries were stored there (the sweep's DELETEs removed some connectors, and their secrets, again).
        assert db.execute("SELECT count(*) FROM secrets").fetchone()[0] >= 1
    finally:
        db.close()
    assert not _leaks(dump), [line[:300] for line in dump.splitlines() if _leaks(line)][:5]
