"""Security sweeps: canary secrets never leak, tokens are compared in constant time, every route needs auth."""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http import credentials
from gateway.http.asgi import all_routes
from gateway.ws import crypto
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
    assert "hmac.compare_digest" in inspect.getsource(credentials.token_matches)
    assert "hmac.compare_digest" in inspect.getsource(crypto.proofs_match)
    assert credentials.token_matches("a" * 30, "a" * 30) and not credentials.token_matches("a" * 30, "b" * 30)
    assert not credentials.token_matches(None, "x") and not credentials.token_matches("", "x")


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
    ("POST", "/api/auth/owner-link"),  # takes a single-use code from `gateway dashboard` instead
}
SHARED = "ext-shared-token-for-auth-sweep-01"
BEARER = "http-bearer-token-for-auth-sweep-1"


def _is_open(method: str, path: str) -> bool:
    # The web UI's page and static assets are public (the UI then logs in).
    return (method, path) in OPEN or path == "/" or path.startswith(("/assets", "/static"))


def _fill(path: str, **values: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x1"), path)


async def test_every_route_refuses_a_caller_without_credentials(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Its bad token is sent to every route from one address: the failed-auth throttle would answer 429 after five.
    config, paths = make_config(tmp_path, limits={"failed_auth_free": 1_000_000})
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
                    continue  # /ws: its auth phase is tested in ws/test_ws.py
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
    "slack_bot": "xoxb-CANARY-slack-bot-3e5a7c9e1b3d5f7a9c0e",
    "user_password": "pw-CANARY-user-6a8c0e2f4b6d8f0a1c3e",
    "transcribe_key": "whisper-CANARY-key-9a7c5e3b1d0f2e4a6c8b",
    "file_bearer": "file-CANARY-bearer-4c6e8a0b2d4f6a8c0e1b",
}
TG_WEBHOOK_SECRET = "tg-webhook-secret-for-the-canary-sweep"


def _leaks(text: str) -> list[str]:
    return [name for name, value in CANARIES.items() if value in text]


@pytest.mark.slow
async def test_canary_secrets_never_appear_in_responses_logs_tracebacks_or_the_database(tmp_path: Path) -> None:
    seen: list[str] = []  # every response: status line, headers, body

    async def openai_refuses(request: Request) -> Response:
        if "reply please" in (await request.body()).decode():  # the connector turns below: they complete
            chunk = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
            return Response(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n", media_type="text/event-stream")
        # Like a real upstream, the error echoes what it was sent: the gateway must not pass it on verbatim.
        return JSONResponse(
            {"error": {"message": f"Incorrect API key provided: {request.headers.get('authorization')}"}}, 401
        )

    async def telegram_refuses(request: Request) -> Response:
        return JSONResponse(
            {"ok": False, "error_code": 401, "description": f"Unauthorized for {request.url.path}"}, 401
        )

    async def slack_refuses(request: Request) -> Response:
        # Slack answers 200 with an error code; a hostile or buggy upstream may quote the credential it was given.
        return JSONResponse({"ok": False, "error": f"invalid_auth ({request.headers.get('authorization')})"})

    routes = [
        Route("/api/chat.postMessage", slack_refuses, methods=["POST"]),
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
                f'[transcribe]\nhttp_url = "{upstream}/v1"\nhttp_api_key = "{CANARIES["transcribe_key"]}"\n'
                f'[connectors.http.filed]\nbearer_token = {{ value = "{CANARIES["file_bearer"]}" }}\n'
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
                    # These two reply through the upstream, whose errors quote the bot tokens (outbox last_error).
                    (
                        "slack",
                        "slk",
                        {
                            "signing_secret": {"value": CANARIES["slack_signing"]},
                            "bot_token": {"value": CANARIES["slack_bot"]},
                            "api_base_url": f"{upstream}/api",
                            "include_self_output": True,
                        },
                    ),
                    (
                        "telegram",
                        "tgw",
                        {
                            "bot_token": {"value": CANARIES["telegram_bot"]},
                            "secret_token": {"value": TG_WEBHOOK_SECRET},
                            "api_base_url": upstream,
                            "include_self_output": True,
                        },
                    ),
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
                # Turns that complete, and whose replies the upstream refuses quoting the bot tokens.
                event = json.dumps(
                    {"type": "event_callback", "event_id": "EvC1", "event": {"type": "message", "channel": "C1",
                     "user": "U1", "text": "reply please", "ts": "1700000000.000100"}}
                ).encode()  # fmt: skip
                stamp = str(int(time.time()))
                mac = hmac.new(CANARIES["slack_signing"].encode(), f"v0:{stamp}:".encode() + event, hashlib.sha256)
                slack_headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + mac.hexdigest()}
                r = await call("POST", "/v1/connectors/slack/slk", content=event, headers=slack_headers)
                assert r.status_code == 200, r.text
                update = {"update_id": 7, "message": {"message_id": 1, "chat": {"id": 42}, "text": "reply please"}}
                tg_headers = {"X-Telegram-Bot-Api-Secret-Token": TG_WEBHOOK_SECRET}
                r = await call("POST", "/v1/connectors/telegram/tgw", json=update, headers=tg_headers)
                assert r.status_code == 200, r.text

                async def dead_letters() -> list[Any]:
                    r = await call("GET", "/v1/runtime/outbox?state=dead_letter", headers=bearer)
                    rows = r.json()["deliveries"]
                    return rows if {d["connector"] for d in rows} >= {"slk", "tgw"} else []

                rows = await wait_for(dead_letters, timeout=30, interval=0.2)
                errors = {d["connector"]: d["last_error"] for d in rows}
                assert "(Bearer [REDACTED])" in errors["slk"] and "/bot[REDACTED]/" in errors["tgw"], errors
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
    # `gateway config` and `gateway status` print the configuration: every secret of it redacted.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    for command in (["config"], ["status"], ["status", "--json"]):
        shown = subprocess.run(  # noqa: ASYNC221 - the gateway has stopped: nothing else runs in this loop
            [sys.executable, "-m", "gateway", *command, "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.stdout and not _leaks(shown.stdout + shown.stderr), (command, _leaks(shown.stdout))
        if command == ["config"]:
            assert '"http_api_key": "[REDACTED]"' in shown.stdout and CANARIES["gateway_token"][:4] in shown.stdout
    db = sqlite3.connect(data / "gateway.db")
    try:
        # Every table, the secrets too: they are sealed (a copied database reveals none of them).
        dump = "\n".join(db.iterdump())
        # The canaries were stored there (the sweep's DELETEs removed some connectors, and their secrets, again).
        assert db.execute("SELECT count(*) FROM secrets").fetchone()[0] >= 1
    finally:
        db.close()
    assert not _leaks(dump), [line[:300] for line in dump.splitlines() if _leaks(line)][:5]
    raw = "".join(p.read_bytes().decode("latin-1") for p in data.glob("gateway.db*"))
    assert not _leaks(raw)


# ---- one redaction for everything that leaves ----


def test_json_bodies_are_redacted_raw_and_in_their_escaped_form() -> None:
    from gateway.http.responses import JSON
    from gateway.logs import redactor

    odd = 'odd"secret\\with-quote'
    redactor.add(odd)
    redactor.add("plain-secret-value-77")
    try:
        body = JSON({"error": f"upstream said {odd} and plain-secret-value-77"}).body
        assert body == b'{"error":"upstream said [REDACTED] and [REDACTED]"}'
        assert JSON({"value": "plain-secret-value-77"}, redact=False).body == b'{"value":"plain-secret-value-77"}'
    finally:
        redactor.discard(odd)
        redactor.discard("plain-secret-value-77")


async def test_ws_frames_and_sse_events_carry_no_secret(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The echo provider repeats what it is sent: a secret typed into a chat comes back redacted, on every path."""
    from tests.gateway.agenthelpers import sse_turn
    from tests.gateway.wshelpers import client, until

    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    secret = gw.token  # the one secret every gateway has
    with trio.fail_after(30):
        async with client(gw) as c:
            await c.send_message(f"my token is {secret} ok")
            frames = await until(c, "result")
        text = json.dumps(frames)
        assert secret not in text and "[REDACTED]" in text, text
        async with admin(gw) as a:
            sid = (await a.post("/api/sessions", json={})).json()["session_id"]
            events = await sse_turn(a, sid, f"again {secret}")
        assert secret not in json.dumps(events) and "[REDACTED]" in json.dumps(events)
    await gw.stop()


# ---- secrets sealed at rest ----


async def test_each_kind_of_stored_secret_is_sealed_in_the_raw_database(nursery: trio.Nursery, tmp_path: Path) -> None:
    stored = {
        "connector": "bot-CANARY-connector-0a2c4e6a8c0e2a4c",
        "llm_key": "sk-CANARY-stored-llm-key-1b3d5f7b9d1f",
        "sidecar_slot": "slot-CANARY-sidecar-2c4e6a8c0e2a4c6e",
        "mcp_env": "env-CANARY-mcp-3d5f7b9d1f3b5d7f9b",
        "mcp_header": "hdr-CANARY-mcp-4e6a8c0e2a4c6e8a0c",
    }
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with admin(gw) as a:
            r = await put(a, "telegram", "tg", {"bot_token": {"value": stored["connector"]}, "ingress_mode": "webhook",
                                                "allow_unauthenticated_ingress": True})  # fmt: skip
            assert r.status_code == 201, r.text
            r = await a.post("/api/app-config/llm", json={"api_key": stored["llm_key"]})
            assert r.status_code == 200, r.text
            r = await a.put("/v1/runtime/secrets/sidecar/creds", json={"value": stored["sidecar_slot"]})
            assert r.status_code == 200, r.text
            mcp = {"transport": "sse", "url": "https://mcp.example/sse", "enabled": False,
                   "env": {"KEY": stored["mcp_env"]}, "headers": {"Authorization": stored["mcp_header"]}}  # fmt: skip
            r = await a.post("/api/app-config/mcp-servers", json={"mcpServers": {"remote": mcp}})
            assert r.status_code == 200, r.text
            # Still usable: the gateway opens them with its key.
            assert (await a.get("/api/app-config/llm")).json()["api_key_configured"] is True
    await gw.stop()
    raw = b"".join(p.read_bytes() for p in paths.data_dir.glob("gateway.db*"))
    assert [k for k, v in stored.items() if v.encode() in raw] == []
    assert paths.secrets_key_file.exists() and paths.secrets_key_file.stat().st_mode & 0o777 == 0o600
