"""Notifications, files, cron, status, logs, providers, CORS, size limits, OpenAPI and /docs over a real server."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

from gateway.http.asgi import all_routes
from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.rest import admin_client, error_of, register


async def test_notifications_rest_and_publish(gateway: RunningGateway) -> None:
    from gateway.notify import notify

    with trio.fail_after(30):
        await register(gateway, "root")
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        with gateway.runtime.notifications.subscribe() as pushed:
            row = await notify(gateway.runtime, title="Webhook", body="deploy done", source="webhook", owner=bob.id)
            got = await pushed.receive()
        assert got == {
            "id": row.id, "title": "Webhook", "body": "deploy done", "read": False
        }  # fmt: skip
        await notify(gateway.runtime, title="Second", body="", source="cron", owner=bob.id)
        listed = (await bob.client.get("/api/notifications", params={"limit": 10})).json()["notifications"]
        assert [n["title"] for n in listed] == ["Second", "Webhook"]
        assert (await carol.client.get("/api/notifications")).json()["notifications"] == []
        assert (await bob.client.get("/api/notifications/unread-count")).json() == {"count": 2}
        assert (await carol.client.put(f"/api/notifications/{row.id}/read")).status_code == 403
        assert (await bob.client.put("/api/notifications/nope/read")).status_code == 404
        assert (await bob.client.put(f"/api/notifications/{row.id}/read")).status_code == 200
        unread = (await bob.client.get("/api/notifications", params={"unread_only": "true"})).json()["notifications"]
        assert [n["title"] for n in unread] == ["Second"]
        assert (await bob.client.post("/api/notifications/read-all")).json()["updated"] == 1
        assert (await bob.client.get("/api/notifications/unread-count")).json() == {"count": 0}
        assert (await bob.client.get("/api/notifications", params={"limit": "lots"})).status_code == 422


async def test_files_upload_download_ownership(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        root = await register(gateway, "root")
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        content = "€ rates\n".encode() * 1000
        files = {"file": ("../../etc/€ rates.txt", content, "application/x-evil")}
        r = await bob.client.post("/api/files", files=files)
        assert r.status_code == 201, r.text
        info = r.json()
        assert info["filename"] == "€ rates.txt" and info["size"] == len(content)
        assert info["mime_type"] == "text/plain" and info["extension"] == "txt"
        assert ".." not in info["key"]
        fid = info["id"]
        assert (await bob.client.get(f"/api/files/{fid}")).json()["id"] == fid
        dl = await bob.client.get(f"/api/files/{fid}/download")
        assert dl.status_code == 200 and dl.content == content
        assert dl.headers["content-length"] == str(len(content))
        assert dl.headers["content-disposition"] == (
            "attachment; filename=\"_ rates.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt"
        )
        for method, path in [
            ("GET", f"/api/files/{fid}"),
            ("GET", f"/api/files/{fid}/download"),
            ("DELETE", f"/api/files/{fid}"),
        ]:
            r = await carol.client.request(method, path)
            assert r.status_code == 403 and error_of(r)["code"] == "FILE_FORBIDDEN"
        # The super admin sees every file.
        assert (await root.client.get(f"/api/files/{fid}")).status_code == 200
        assert (await root.client.get(f"/api/files/{fid}/download")).content == content
        # Attaching someone else's file to a chat is refused too.
        sid = (await carol.client.post("/api/sessions", json={})).json()["session_id"]
        r = await carol.client.post(f"/api/sessions/{sid}/chat", json={"message": "read it", "files": [fid]})
        assert r.status_code == 403
        own = (await carol.client.post("/api/files", files={"file": ("notes.md", b"# hi", "text/plain")})).json()
        async with carol.client.stream(
            "POST", f"/api/sessions/{sid}/chat", json={"message": "see", "files": [own["id"]]}
        ) as s:
            assert s.status_code == 200
            await s.aread()
        attached = (await carol.client.get(f"/api/sessions/{sid}/files")).json()["files"]
        assert [f["id"] for f in attached] == [own["id"]]
        assert (await bob.client.post("/api/files", files={"other": ("a.txt", b"x")})).status_code == 422
        not_multipart = await bob.client.post("/api/files", json={"file": "x"})
        assert not_multipart.status_code == 415
        assert (await bob.client.delete(f"/api/files/{fid}")).status_code == 200
        assert (await bob.client.get(f"/api/files/{fid}")).status_code == 404
        assert (await bob.client.get(f"/api/files/{fid}/download")).status_code == 404


async def test_size_limits_and_cors(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        server={"max_body_bytes": 1024},
        limits={"max_upload_bytes": 4096},
        cors={"enabled": True, "origins": ["http://app.example"], "credentials": True},
    )
    gw = await start_gateway(nursery, *config)
    with trio.fail_after(30):
        async with admin_client(gw) as client:
            big = await client.post("/api/agent", json={"message": "x" * 2000})
            assert big.status_code == 413 and error_of(big)["code"] == "PAYLOAD_TOO_LARGE"

            async def chunked() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"x" * 500

            streamed = await client.post("/api/agent", content=chunked(), headers={"content-type": "application/json"})
            assert streamed.status_code == 413
            upload = await client.post("/api/files", files={"file": ("a.bin", b"x" * 5000)})
            assert upload.status_code == 413
            small = await client.post("/api/files", files={"file": ("a.bin", b"x" * 2000)})
            assert small.status_code == 201
            pre = await client.options(
                "/api/sessions",
                headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization"},
            )  # fmt: skip
            assert pre.status_code == 200
            assert pre.headers["access-control-allow-origin"] == "http://app.example"
            assert pre.headers["access-control-allow-credentials"] == "true"
            # Every method some route answers passes a preflight (PATCH /api/models-json was refused: issue 15).
            used = {m for r in all_routes() for m in getattr(r, "methods", None) or ()} - {"HEAD"}
            assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= used
            for method in sorted(used):
                pre = await client.options(
                    "/api/models-json",
                    headers={"Origin": "http://app.example", "Access-Control-Request-Method": method},
                )
                assert pre.status_code == 200, (method, pre.text)
                assert method in pre.headers["access-control-allow-methods"]
            other = await client.get("/api/sessions", headers={"Origin": "http://evil.example"})
            assert "access-control-allow-origin" not in other.headers
        await gw.stop()


async def test_cron_rest(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        await register(gateway, "root")
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        sid = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
        r = await bob.client.post(
            "/api/cron/create", json={"name": "daily", "cron": "0 9 * * *", "session_id": sid, "prompt": "report"}
        )
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["enabled"] is True and job["next_fire_at"].endswith("T09:00:00.000Z")
        for body, field in [
            ({"cron": "nonsense", "session_id": sid, "prompt": "x"}, "cron"),
            ({"cron": "0 0 31 2 *", "session_id": sid, "prompt": "x", "enabled": False}, "cron"),  # never fires
            ({"cron": "0 0 30 2 *", "session_id": sid, "prompt": "x"}, "cron"),
            ({"session_id": sid, "prompt": "x"}, "cron"),
            ({"cron": "* * * * *", "interval_seconds": 5, "session_id": sid, "prompt": "x"}, "cron"),
            ({"interval_seconds": 60, "chat_id": "7", "prompt": "x"}, "chat_id"),
            (
                {"interval_seconds": 60, "session_id": sid, "connector": "telegram:b", "chat_id": "7", "prompt": "x"},
                "session_id",
            ),
            ({"interval_seconds": 0, "session_id": sid, "prompt": "x"}, "interval_seconds"),
        ]:
            bad = await bob.client.post("/api/cron/create", json=body)
            assert bad.status_code == 422, body
            assert error_of(bad)["details"][0]["loc"] == ["body", field], body
            if str(body.get("cron", "")).startswith("0 0 3"):
                assert "never" in error_of(bad)["message"], bad.text
        connector = {"interval_seconds": 60, "connector": "telegram", "chat_id": "7", "prompt": "x"}
        assert (await bob.client.post("/api/cron/create", json=connector)).status_code == 403
        other = {"interval_seconds": 60, "session_id": sid, "prompt": "x"}
        assert (await carol.client.post("/api/cron/create", json=other)).status_code == 403
        assert [j["id"] for j in (await bob.client.get("/api/cron")).json()["jobs"]] == [job["id"]]
        assert (await carol.client.get("/api/cron")).json()["jobs"] == []
        assert (await carol.client.post(f"/api/cron/{job['id']}/toggle")).status_code == 403
        toggled = await bob.client.post(f"/api/cron/{job['id']}/toggle")
        assert toggled.json() == {"status": "ok", "enabled": False}
        with gateway.runtime.notifications.subscribe() as pushed:
            fired = await bob.client.post("/api/cron/trigger", json={"job_id": job["id"]})
            assert fired.status_code == 200 and fired.json()["status"] == "ok"
            note = await pushed.receive()
        assert note["title"] == "Cron daily: completed" and note["body"] == "report"
        assert (await bob.client.post("/api/cron/trigger", json={"job_id": "nope"})).status_code == 404
        assert (await bob.client.post("/api/cron/trigger", json={})).status_code == 422
        assert (await carol.client.delete(f"/api/cron/{job['id']}")).status_code == 403
        assert (await bob.client.delete(f"/api/cron/{job['id']}")).status_code == 200
        assert (await bob.client.delete(f"/api/cron/{job['id']}")).status_code == 404


async def test_status_logs_providers_models(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        await register(gateway, "root")
        bob = await register(gateway, "bob")
        async with admin_client(gateway) as client:
            r = await client.get("/api/status")
            assert r.status_code == 200, r.text
            services = {s["service"]: s["status"] for s in r.json()["services"]}
            assert r.json()["sessions"] == 0
            assert services == {
                "storage": "ok",
                "scheduler": "ok",
                "disk": "ok",
                "connectors": "ok",
                "mcp": "ok",
                "sessions": "ok",
                "actors": "ok",
            }
            assert (await bob.client.get("/api/status")).status_code == 403

            from gateway.logs import memory_handler

            # The memory handler is one per process, shared by every gateway a test run starts in it (and kept
            # between tests): this test counts only the records carrying its own mark.
            mark = f"rest-features-{uuid.uuid4().hex[:12]}"
            logger = logging.getLogger("gateway.test")
            logger.addHandler(memory_handler)
            logger.setLevel(logging.INFO)
            # Only through our handler: if an earlier test configured the `gateway` logger, propagation
            # would hand the record to the same memory handler a second time.
            logger.propagate = False
            # The ring is the process's: records other tests left in it (a web UI test logs "disk nearly full"
            # too) would be counted below.
            memory_handler.records.clear()
            try:
                logger.warning("%s disk nearly full on %s, token %s", mark, "sda1", gateway.token)
                logger.info("%s quiet info line", mark)
            finally:
                logger.removeHandler(memory_handler)
            warned = await client.get("/api/logs", params={"level": "warning", "q": mark})  # the info line is left out
            logs = warned.json()["logs"]
            assert len(logs) == 1 and logs[0]["level"] == "warning"
            assert gateway.token not in logs[0]["msg"], "secrets never reach the log API"
            assert (await client.get("/api/logs", params={"since": "2999-01-01T00:00:00Z"})).json()["logs"] == []
            assert (await client.get("/api/logs", params={"until": "2000-01-01T00:00:00Z"})).json()["logs"] == []
            mine = (await client.get("/api/logs", params={"until": "2999-01-01T00:00:00Z", "q": mark})).json()["logs"]
            assert [r["level"] for r in mine] == ["info", "warning"]  # newest first, both levels without a floor
            assert (await client.get("/api/logs", params={"since": "yesterday"})).status_code == 422
            assert (await client.get("/api/logs", params={"level": "loud"})).status_code == 422
            assert (await bob.client.get("/api/logs")).status_code == 403
            async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
                assert (await anon.get("/api/logs")).status_code == 401
            providers = (await bob.client.get("/api/providers")).json()["providers"]
            assert [(p["name"], p["active"]) for p in providers] == [("echo", True), ("openai", False)]
            models = (await bob.client.get("/api/models")).json()
            assert models["active_provider"] == "echo"


async def test_status_is_503_while_the_disk_is_short_of_space(nursery: trio.Nursery, tmp_path: Path) -> None:
    # No stub: the real disk check, told to want more free space than any disk here has (1 EiB).
    gw = await start_gateway(nursery, *make_config(tmp_path, storage={"min_free_disk_mb": 2**40}))
    with trio.fail_after(30):
        async with admin_client(gw) as client:
            down = await client.get("/api/status")
        assert down.status_code == 503
        err = error_of(down)
        assert err["code"] == "SERVICE_UNAVAILABLE" and err["message"] == "in error: disk"
        services = {s["service"]: s for s in err["details"]["services"]}
        assert services["disk"]["status"] == "error" and "MiB free" in services["disk"]["details"]
        assert services["storage"]["status"] == "ok" and err["details"]["status"] == "error"
        await gw.stop()


async def test_openapi_and_docs_viewer(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            spec = (await anon.get("/openapi.json")).json()
            docs = await anon.get("/docs")
            viewer = await anon.get("/docs/viewer.js")
            css = await anon.get("/docs/viewer.css")
            assert (await anon.get("/docs/../../config.py")).status_code == 404
            redoc = await anon.get("/redoc")  # the platform seed's path for its viewer: the same one
            assert redoc.status_code == 200 and redoc.text == (await anon.get("/docs")).text
            # CORS is off by default: no browser origin is let in.
            cors = await anon.get("/openapi.json", headers={"Origin": "http://app.example"})
            assert "access-control-allow-origin" not in cors.headers
    assert spec["openapi"].startswith("3.")
    ops = {(m.upper(), p) for p, methods in spec["paths"].items() for m in methods}
    for needed in [
        ("POST", "/api/auth/register"), ("GET", "/api/sessions"), ("POST", "/api/sessions/{id}/chat"),
        ("POST", "/v1/chat/completions"), ("POST", "/api/cron/create"), ("GET", "/api/files/{id}/download"),
        ("GET", "/api/notifications"), ("GET", "/api/status"), ("PUT", "/api/chat/sessions/{id}"),
    ]:  # fmt: skip
        assert needed in ops, needed
    register_body = spec["paths"]["/api/auth/register"]["post"]["requestBody"]["content"]["application/json"]
    assert register_body["schema"] == {"$ref": "#/components/schemas/RegisterRequest"}
    assert spec["components"]["schemas"]["RegisterRequest"]["properties"]["password"]["minLength"] == 8
    assert docs.status_code == 200 and "viewer.js" in docs.text and "http" not in docs.text.split("<body>")[0]
    assert viewer.status_code == 200 and "openapi.json" in viewer.text
    assert css.status_code == 200
    # Nothing is fetched from elsewhere (no CDN): the page and its assets name no remote URL.
    for text in (docs.text, viewer.text, css.text):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), text[:200]
    for asset in re.findall(r'(?:src|href)="([^"]+)"', docs.text):
        assert asset.startswith("/"), asset


async def test_a_turn_the_outcomes_forgot_is_still_answered_and_told(gateway: RunningGateway) -> None:
    """`runtime.outcomes` keeps few ended turns: a reader too late for one reads the turn's row instead."""
    from storage import events as ev_db

    runtime = gateway.runtime
    runtime.outcomes.keep = 0  # every ended turn forgotten at once
    with trio.fail_after(30):
        async with admin_client(gateway) as client:
            r = await client.post("/api/agent", json={"message": "late reader", "session": "forgot"})
            assert r.status_code == 200, r.text
            answer = r.json()
        assert answer["reply"] == "late reader"  # the echo provider
        assert answer["usage"]["total_tokens"] == answer["usage"]["input_tokens"] + answer["usage"]["output_tokens"]
        assert len(runtime.outcomes) == 0
        events = await runtime.store.call(ev_db.events_after, answer["session_id"], 0)
        turn_id = next(e.turn_id for e in events if e.type == "turn_ended")
        background = runtime.services.background
        assert background is not None
        with runtime.notifications.subscribe() as pushed:
            background.watch(turn_id or "", title="Late", source="api", owner=None)
            note = await pushed.receive()
        assert (note["title"], note["body"]) == ("Late: completed", "late reader")
