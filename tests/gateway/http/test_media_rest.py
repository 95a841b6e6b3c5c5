"""Transcription and agent avatars over a real gateway (a loopback Whisper-compatible API as the backend)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import make_config, start_gateway
from tests.fakes.http_server import serve_app
from tests.gateway.agent.test_transcribe import whisper_api
from tests.gateway.rest import admin_client, error_of, register

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
NO_WHISPER = {"whisper_command": "", "whisper_cpp_command": ""}


async def test_transcribe_is_501_until_a_backend_is_configured(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(30):
        gw = await start_gateway(nursery, *make_config(tmp_path / "a", transcribe=NO_WHISPER))
        audio = gw.runtime.paths.workspace / "voice.ogg"
        audio.parent.mkdir(parents=True, exist_ok=True)
        audio.write_bytes(b"OggS" + b"\0" * 96)
        async with admin_client(gw) as admin:
            r = await admin.post("/api/transcribe", json={"file_path": str(audio)})
            assert r.status_code == 501 and error_of(r)["code"] == "TRANSCRIPTION_NOT_CONFIGURED"
            assert "[transcribe] http_url" in error_of(r)["message"]
        await gw.stop()

        base = await serve_app(nursery, whisper_api())
        gw = await start_gateway(
            nursery, *make_config(tmp_path / "b", transcribe={**NO_WHISPER, "http_url": base + "/v1"})
        )
        audio = gw.runtime.paths.workspace / "voice.ogg"
        audio.parent.mkdir(parents=True, exist_ok=True)
        audio.write_bytes(b"OggS" + b"\0" * 96)
        async with admin_client(gw) as admin, httpx.AsyncClient(base_url=gw.base_url) as anon:
            r = await admin.post("/api/transcribe", json={"file_path": str(audio)})
            assert r.status_code == 200 and r.json() == {"text": "heard 100 bytes with whisper-1", "backend": "http"}
            r = await admin.post("/api/transcribe", json={"file_path": "voice.ogg"})  # relative to the workspace
            assert r.status_code == 200
            r = await admin.post("/api/transcribe", json={"file_path": "/etc/hostname"})
            assert r.status_code == 403 and error_of(r)["code"] == "FORBIDDEN"
            r = await admin.post("/api/transcribe", json={"file_path": str(audio.with_name("gone.ogg"))})
            assert r.status_code == 404 and error_of(r)["code"] == "FILE_NOT_FOUND"
            r = await admin.post("/api/transcribe", json={})
            assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body"]
            assert (await anon.post("/api/transcribe", json={"file_path": str(audio)})).status_code == 401
        await gw.stop()


async def test_avatar_upload_and_read(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(30):
        gw = await start_gateway(nursery, *make_config(tmp_path))
        async with admin_client(gw) as admin, httpx.AsyncClient(base_url=gw.base_url) as anon:
            r = await admin.get("/api/agents/main/avatar")
            assert r.status_code == 404 and error_of(r)["code"] == "AVATAR_NOT_FOUND"
            r = await admin.put("/api/agents/main/avatar", files={"file": ("me.png", PNG, "image/png")})
            assert r.status_code == 200 and r.json() == {"name": "main", "mime": "image/png", "size": len(PNG)}
            r = await admin.get("/api/agents/main/avatar")
            assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"
            gif = b"GIF89a" + b"\0" * 20
            r = await admin.post("/api/agents/main/avatar", files={"file": ("x.png", gif, "image/png")})
            assert r.json()["mime"] == "image/gif"  # the content decides, not the name or Content-Type
            assert (await admin.get("/api/agents/main/avatar")).headers["content-type"] == "image/gif"

            # Not an image, too big, not multipart, no file field, or a name that tries to leave the folder.
            svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
            r = await admin.put("/api/agents/main/avatar", files={"file": ("a.svg", svg, "image/svg+xml")})
            assert r.status_code == 415 and error_of(r)["code"] == "UNSUPPORTED_MEDIA_TYPE"
            big = PNG + b"\0" * (1024 * 1024)
            r = await admin.put("/api/agents/main/avatar", files={"file": ("big.png", big, "image/png")})
            assert r.status_code == 413
            r = await admin.put("/api/agents/main/avatar", content=PNG, headers={"Content-Type": "image/png"})
            assert r.status_code == 415
            r = await admin.put("/api/agents/main/avatar", files={"other": ("a.png", PNG, "image/png")})
            assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body", "file"]
            # ".." is resolved by the client and "%2F" splits the segment: no route matches those (404).
            expected = {"..": 404, ".hidden": 422, "a..b": 422, "%2e%2e": 422, "a%2Fb": 404, "x" * 65: 422}
            for name, status in expected.items():
                r = await admin.put(f"/api/agents/{name}/avatar", files={"file": ("a.png", PNG, "image/png")})
                assert r.status_code == status, (name, r.status_code)
                if status == 422:
                    assert error_of(r)["details"][0]["loc"] == ["path", "name"]
            assert sorted(p.name for p in (gw.runtime.paths.data_dir / "avatars").iterdir()) == ["main"]
            assert (await admin.get("/api/agents/main/avatar")).content.startswith(b"GIF89a")

            assert (await anon.get("/api/agents/main/avatar")).status_code == 401
            await register(gw, "root")
            plain = await register(gw, "viewer")
            assert (await plain.client.get("/api/agents/main/avatar")).status_code == 200
            r = await plain.client.put("/api/agents/main/avatar", files={"file": ("me.png", PNG, "image/png")})
            assert r.status_code == 403
            await plain.client.aclose()
        await gw.stop()
