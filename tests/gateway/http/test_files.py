"""`GET /files` and `POST /upload` over a real socket: containment, auth, names, limits, MIME sniffing."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from gateway.http.routes.files import clean_name, content_disposition
from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.crashkit import Gateway, config_file, reap, spawn

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def auth(gw: RunningGateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.token}"}


async def get(gw: RunningGateway, path: str, *, token: bool = True) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        return await http.get("/files", params={"path": path}, headers=auth(gw) if token else {})


@pytest.fixture
def tree(gateway: RunningGateway) -> Path:
    ws = gateway.runtime.paths.workspace
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "a.txt").write_text("inside")
    (ws / "sub").mkdir()
    (ws / "café €.txt").write_text("unicode")
    sibling = ws.parent / (ws.name + "2")
    sibling.mkdir()
    (sibling / "secret.txt").write_text("SIBLING-SECRET")
    outside = ws.parent / "outside.txt"
    outside.write_text("OUTSIDE-SECRET")
    os.symlink(outside, ws / "link.txt")
    os.symlink(ws.parent, ws / "up")
    return ws


async def test_a_file_inside_the_workspace_is_served(gateway: RunningGateway, tree: Path) -> None:
    with trio.fail_after(10):
        r = await get(gateway, str(tree / "a.txt"))
        assert r.status_code == 200 and r.text == "inside"
        assert r.headers["content-disposition"] == 'attachment; filename="a.txt"'
        r = await get(gateway, str(tree / "café €.txt"))
        assert r.status_code == 200 and r.text == "unicode"
        assert "filename*=UTF-8''caf%C3%A9%20%E2%82%AC.txt" in r.headers["content-disposition"]
        r = await get(gateway, "a.txt")  # relative to the root
        assert r.status_code == 200


@pytest.mark.parametrize(
    "make_path",
    [
        lambda ws: f"{ws}/../token",
        lambda ws: f"{ws}/sub/../../gateway.db",
        lambda ws: "/etc/passwd",
        lambda ws: f"{ws}2/secret.txt",  # a sibling folder whose name starts with the root's
        lambda ws: f"{ws}/link.txt",  # a symlink pointing out of the root
        lambda ws: f"{ws}/up/outside.txt",  # through a symlinked folder
        lambda ws: f"{ws}/../outside.txt",
    ],
)
async def test_paths_outside_the_root_are_forbidden(gateway: RunningGateway, tree: Path, make_path: object) -> None:
    assert callable(make_path)
    with trio.fail_after(10):
        r = await get(gateway, make_path(tree))
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "FORBIDDEN"
    assert "SECRET" not in r.text


async def test_encoded_traversal_nul_and_missing(gateway: RunningGateway, tree: Path) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.base_url) as http:
            # %2e%2e once-decoded is `..` (refused); double-encoded stays literal, which is simply absent.
            r = await http.get(f"/files?path={tree}/%2e%2e/outside.txt", headers=auth(gateway))
            assert r.status_code == 403
            r = await http.get(f"/files?path={tree}/%252e%252e/outside.txt", headers=auth(gateway))
            assert r.status_code == 404 and "SECRET" not in r.text
            r = await http.get(f"/files?path={tree}/a.txt%00.png", headers=auth(gateway))
            assert r.status_code == 400
        assert (await get(gateway, f"{tree}/a.txt\n")).status_code == 400
        assert (await get(gateway, f"{tree}/missing.txt")).status_code == 404
        assert (await get(gateway, f"{tree}/{'x' * 5000}")).status_code == 400
        assert (await get(gateway, f"{tree}/sub")).status_code == 404
        assert (await get(gateway, f"{tree}/a.txt", token=False)).status_code == 401
        async with httpx.AsyncClient(base_url=gateway.base_url) as http:
            r = await http.get("/files", headers=auth(gateway))
            assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"


async def upload(
    gw: RunningGateway, name: str, data: bytes, caption: str | None = None, token: bool = True
) -> httpx.Response:
    fields = {"caption": caption} if caption is not None else None
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        return await http.post(
            "/upload", files={"file": (name, data, "text/plain")}, data=fields, headers=auth(gw) if token else {}
        )


async def test_upload_saves_under_a_dated_folder_with_a_clean_name(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        r = await upload(gateway, "../../etc/pa:ss*wd.png", PNG, caption="look at this")
        assert r.status_code == 200, r.text
        body = r.json()
        saved = Path(body["path"])
        assert await trio.Path(saved).read_bytes() == PNG
        assert saved.parent.parent == gateway.runtime.paths.workspace / "api_files"
        today = {
            dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
            (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%d"),
        }
        assert saved.parent.name in today  # YYYY-MM-DD, UTC
        assert body["name"] == "_.._etc_pa_ss_wd.png" == saved.name
        assert body["mime"] == "image/png"  # sniffed from the bytes, not the declared text/plain
        assert body["size"] == len(PNG)
        assert f"<file:{saved}>" in body["prompt"] and body["prompt"].endswith("look at this")
        again = (await upload(gateway, "../../etc/pa:ss*wd.png", b"x")).json()
        assert again["name"] == "_.._etc_pa_ss_wd_1.png"
        assert (await upload(gateway, "a.txt", b"x", token=False)).status_code == 401
        async with httpx.AsyncClient(base_url=gateway.base_url) as http:
            r = await http.post("/upload", data={"caption": "no file"}, headers=auth(gateway))
            assert r.status_code == 400
            r = await http.post("/upload", content=b"garbage", headers=auth(gateway) | {"content-type": "text/plain"})
            assert r.status_code == 400


async def test_an_upload_over_the_limit_is_413_and_leaves_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, files={"max_upload_bytes": 1000})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        r = await upload(gw, "big.bin", b"x" * 1001)
        assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        r = await upload(gw, "huge.bin", b"x" * 200_000)  # refused from its Content-Length
        assert r.status_code == 413

        async def chunked() -> AsyncIterator[bytes]:
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
            for _ in range(25):
                yield b"y" * 8192
            yield b"\r\n--B--\r\n"

        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            headers = {"Authorization": f"Bearer {gw.token}", "content-type": "multipart/form-data; boundary=B"}
            r = await http.post("/upload", content=chunked(), headers=headers)  # no length: counted as it streams
        assert r.status_code == 413
        folder = paths.workspace / "api_files"
        leftovers = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
        assert leftovers == []
        assert (await upload(gw, "ok.bin", b"x" * 1000)).status_code == 200
        await gw.stop()


def test_clean_name_and_content_disposition() -> None:
    assert clean_name('a/b\\c<d>e:f"g|h?i*j\x00k') == "a_b_c_d_e_f_g_h_i_j_k"
    assert clean_name("..") == "file"
    long = clean_name("x" * 300 + ".txt")
    assert len(long) == 120 and long.endswith(".txt")
    assert content_disposition("plain.txt") == 'attachment; filename="plain.txt"'
    assert content_disposition('a"b\r\n.txt').startswith('attachment; filename="a_b__.txt"; filename*=')


async def test_an_upload_above_the_json_body_limit_is_accepted(gateway: RunningGateway) -> None:
    # The 50 MB upload limit is its own: the 2 MiB limit for JSON bodies (server.max_body_bytes) does not apply.
    size = gateway.runtime.config.server.max_body_bytes + 1024 * 1024
    assert size < gateway.runtime.config.files.max_upload_bytes
    with trio.fail_after(30):
        r = await upload(gateway, "big.bin", b"z" * size)
    assert r.status_code == 200, r.text
    assert r.json()["size"] == size
    assert (await trio.Path(r.json()["path"]).stat()).st_size == size


async def test_file_access_home_and_all(nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "mine.txt").write_text("MINE")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("ELSEWHERE")
    monkeypatch.setenv("HOME", str(home))  # what `home` means is the user's home folder
    with trio.fail_after(20):
        config, paths = make_config(tmp_path, server={"file_access": "home"})
        gw = await start_gateway(nursery, config, paths)
        assert (await get(gw, str(home / "docs" / "mine.txt"))).text == "MINE"
        assert (await get(gw, str(elsewhere))).status_code == 403
        assert (await get(gw, str(paths.workspace / ".." / ".." / "elsewhere.txt"))).status_code == 403
        await gw.stop()
        config, paths = make_config(tmp_path, server={"file_access": "all"})
        gw = await start_gateway(nursery, config, paths)
        r = await get(gw, str(elsewhere))
        assert r.status_code == 200 and r.text == "ELSEWHERE"
        assert (await get(gw, f"{elsewhere}\x00")).status_code == 400  # still no NUL, even with every root
        await gw.stop()


async def test_uploads_may_exceed_the_general_body_limit_up_to_their_own(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Every other route stops at server.max_body_bytes; /upload and /api/files have their own, larger limits.
    config, paths = make_config(
        tmp_path,
        server={"max_body_bytes": 16 * 1024},
        files={"max_upload_bytes": 128 * 1024},
        limits={"max_upload_bytes": 64 * 1024},
    )
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        data = b"z" * (50 * 1024)
        assert (await upload(gw, "big.bin", data)).status_code == 200
        assert (await upload(gw, "bigger.bin", data * 2)).status_code == 200
        assert (await upload(gw, "too-big.bin", data * 3)).status_code == 413
        async with httpx.AsyncClient(base_url=gw.base_url, headers=auth(gw)) as http:
            r = await http.post("/api/files", files={"file": ("a.bin", data, "application/octet-stream")})
            assert r.status_code == 201, r.text
            r = await http.post("/api/files", files={"file": ("b.bin", data * 2, "application/octet-stream")})
            assert r.status_code == 413
            r = await http.post("/api/agent", json={"message": "x" * (20 * 1024)})
            assert r.status_code == 413
        await gw.stop()


async def test_a_fifo_is_refused_at_once_while_the_loop_keeps_serving(tmp_path: Path) -> None:
    """Issue 13: `GET /files` on a FIFO blocked the whole event loop (`/health` and SIGTERM too) until something
    wrote to it. A real gateway process: only regular files are opened, the FIFO is a 404 at once."""
    data = tmp_path / "data"
    (data / "workspace").mkdir(parents=True)
    os.mkfifo(data / "workspace" / "pipe")
    config = config_file(tmp_path)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    gw: Gateway | None = None
    try:
        async with trio.open_nursery() as nursery:
            gw = await spawn(config, nursery, tmp_path)
            # The client timeouts only bound a regression (a blocked loop answers nothing): they assert no speed.
            answers: dict[str, httpx.Response] = {}

            async def ask(http: httpx.AsyncClient, name: str, url: str, params: dict[str, str] | None = None) -> None:
                answers[name] = await http.get(url, params=params)

            async with (
                httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=20) as http,
                trio.open_nursery() as both,
            ):
                both.start_soon(ask, http, "fifo", "/files", {"path": "pipe"})
                for n in range(5):
                    both.start_soon(ask, http, f"health{n}", "/health")
            fifo = answers["fifo"]
            assert fifo.status_code == 404, fifo.text
            assert fifo.json()["error"]["code"] == "NOT_A_REGULAR_FILE" and "FIFO" in fifo.json()["error"]["message"]
            assert all(answers[f"health{n}"].status_code == 200 for n in range(5))
            nursery.cancel_scope.cancel()
    finally:
        await reap(gw)
