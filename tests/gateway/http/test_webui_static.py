"""How the web UI is served: `/` and `/assets/*` only, types, caching, CSP, no traversal, nothing shadowed; and the
history route it draws from (`GET /api/sessions/{id}/events`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import trio

from gateway.http.webui import ROOT, content_security_policy, scan
from tests.conftest import RunningGateway
from tests.gateway.rest import admin_client, error_of, register, sse_events

NACL_SHA256 = "3ec535c004aeeb225785d8e93fb33bf99f52e399bd7dfc01969b5629baea5131"  # tweetnacl 1.0.3, unchanged


async def test_the_page_and_its_assets_are_served_with_types_csp_and_etags(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            page = await anon.get("/")
            js = await anon.get("/assets/js/app.js")
            css = await anon.get("/assets/app.css")
            nacl = await anon.get("/assets/vendor/nacl-fast.min.js")
            again = await anon.get("/assets/js/app.js", headers={"If-None-Match": js.headers["etag"]})
            head = await anon.head("/assets/app.css")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    host = gateway.base_url.removeprefix("http://")
    csp = page.headers["content-security-policy"]
    assert f"connect-src 'self' ws://{host} wss://{host};" in csp
    assert "script-src 'self';" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/assets/js/app.js">' in page.text  # no inline script: CSP allows none
    assert js.status_code == 200 and js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert again.status_code == 304 and again.content == b""
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(css.content)
    assert hashlib.sha256(nacl.content).hexdigest() == NACL_SHA256


async def test_no_traversal_and_no_shadowing_of_other_routes(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            probes = {
                path: await anon.get(path)
                for path in (
                    "/assets/../webui.py",
                    "/assets/%2e%2e/index.html",
                    "/assets/..%2fwebui.py",
                    "/assets/js/../../index.html",
                    "/assets/js/nope.js",
                    "/assets/vendor/README.txt.bak",
                    "/index.html",
                    "/chat",
                )
            }
            health = await anon.get("/health")
            docs = await anon.get("/docs")
            openapi = await anon.get("/openapi.json")
            api = await anon.get("/api/sessions")
            files = await anon.get("/files", params={"path": "/etc/passwd"})
    for path, r in probes.items():
        assert r.status_code == 404, path
        assert error_of(r)["code"] == "NOT_FOUND", path
    assert health.json()["status"] == "ok"
    assert "Agent gateway API" in docs.text
    assert "paths" in openapi.json()
    assert api.status_code == 401 and files.status_code == 401  # still the API's own answers


def test_only_files_under_assets_with_known_types_are_servable(tmp_path: Path) -> None:
    (tmp_path / "assets" / "js").mkdir(parents=True)
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "assets" / "js" / "a.js").write_text("export {}")
    (tmp_path / "assets" / "secret.py").write_text("TOKEN = 1")
    (tmp_path / "outside.js").write_text("nope")
    (tmp_path / "assets" / "link.js").symlink_to(tmp_path / "outside.js")
    assert sorted(scan(tmp_path)) == ["js/a.js"]
    shipped = scan(ROOT)
    assert {"js/app.js", "js/e2e.js", "app.css", "vendor/nacl-fast.min.js", "icon.svg"} <= set(shipped)


def test_the_csp_echoes_only_a_plain_host() -> None:
    assert "ws://gw.local:8741 wss://gw.local:8741" in content_security_policy("gw.local:8741")
    assert "ws://[::1]:8741" in content_security_policy("[::1]:8741")
    for bad in ("evil.com; script-src *", "a b", "x'y", "", None):
        assert "connect-src 'self';" in content_security_policy(bad), bad


async def test_session_events_give_the_history_with_prompts_in_pages(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with admin_client(gateway) as client:
            sid = (await client.post("/api/sessions", json={})).json()["session_id"]
            for text in ("one two", "three four"):
                async with client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": text}) as r:
                    await sse_events(r)
            full = (await client.get(f"/api/sessions/{sid}/events")).json()
            page1 = (await client.get(f"/api/sessions/{sid}/events", params={"limit": 3})).json()
            after = page1["events"][-1]["seq"]
            page2 = (await client.get(f"/api/sessions/{sid}/events", params={"after": after, "limit": 1000})).json()
            missing = await client.get("/api/sessions/nope/events")
            bad = await client.get(f"/api/sessions/{sid}/events", params={"limit": 0})
        await register(gateway, "root")  # the first account is an admin; mallory is not
        other = await register(gateway, "mallory")
        async with other.client:
            forbidden = await other.client.get(f"/api/sessions/{sid}/events")
    events = full["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)) and full["last_seq"] == seqs[-1] and full["more"] is False
    assert [e["text"] for e in events if e["type"] == "turn_started"] == ["one two", "three four"]
    assert [e["text"] for e in events if e["type"] == "result"] == ["one two", "three four"]
    assert page1["more"] is True and len(page1["events"]) == 3
    assert page1["events"] + page2["events"] == events
    assert missing.status_code == 404 and error_of(missing)["code"] == "SESSION_NOT_FOUND"
    assert bad.status_code == 422
    assert forbidden.status_code == 403 and error_of(forbidden)["code"] == "SESSION_FORBIDDEN"
