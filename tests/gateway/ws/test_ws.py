"""`/ws` v1 over real sockets: handshake and auth errors, streaming, replay/reflection, abort, resume."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from nacl.public import PrivateKey
from trio_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import Ping, Request

from gateway.ws import crypto
from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.connectors.helpers import wait_for
from tests.gateway.wshelpers import client, deltas, plain, raw, until, url


async def test_handshake_then_a_streamed_turn(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with client(gateway, chat_id=5, channel_id=9) as c:
            ok = c.auth_ok
            assert ok["type"] == "auth_ok" and ok["chat_id"] == 5 and ok["channel_id"] == 9
            assert ok["active_provider"] == "echo"
            assert "echo" in [p["name"] for p in ok["providers"]]
            assert ok["active_model"] == "echo"
            assert len(crypto.b64decode(ok["e2e_pk"])) == 32
            async with httpx.AsyncClient(base_url=gateway.base_url) as http:
                assert (await http.get("/health")).json()["connections"] == 1
            await c.send_message("hello brave <file:/tmp/pic.png> world")
            frames = await until(c, "result")
    assert deltas(frames) == "hello brave <file:/tmp/pic.png> world"
    result = frames[-1]
    assert result["text"] == "hello brave <file:/tmp/pic.png> world"
    assert result["stream_fallback"] is False
    assert result["files"] == [{"path": "/tmp/pic.png", "name": "pic.png", "is_image": True}]
    assert {f["type"] for f in frames} <= {"text_delta", "result"}, "v1 clients get only the types they know"
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs)


async def test_default_chat_without_channel(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with client(gateway, chat_id=-3, channel_id=0) as c:
            assert c.auth_ok["chat_id"] == 1
            assert "channel_id" not in c.auth_ok


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (b"\x00binary", "auth_required"),
        ("not json", "auth_required"),
        ('{"type":"message","text":"hi"}', "auth_required"),
        ('["auth"]', "auth_required"),
        ('{"type":"auth","token":"wrong-token-0123456789","e2e_pk":"' + "A" * 43 + '="}', "auth_failed"),
        ('{"type":"auth","token":"TOKEN"}', "auth_failed"),
        ('{"type":"auth","token":"TOKEN","e2e_pk":"not base64!"}', "auth_failed"),
        ('{"type":"auth","token":"TOKEN","e2e_pk":"AAAA"}', "auth_failed"),
        ('{"type":"auth","token":"TOKEN","e2e_pk":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}', "auth_failed"),
        ('{"type":"auth","v":2,"e2e_pk":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","nonce":"x"}', "auth_failed"),
        ('{"type":"auth","token":12,"e2e_pk":"AAAA"}', "auth_failed"),
    ],
)
async def test_auth_errors_are_plaintext_then_close(gateway: RunningGateway, first: str | bytes, code: str) -> None:
    if isinstance(first, str):
        first = first.replace("TOKEN", gateway.token)
    with trio.fail_after(10):
        async with raw(gateway) as ws:
            await ws.send_message(first)
            err = await plain(ws)
            assert err["type"] == "error" and err["code"] == code and err["message"]
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None and ws.closed.code == 1008


async def test_auth_timeout(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, ws={"auth_timeout": 0.3})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(10):
        async with raw(gw) as ws:
            err = await plain(ws)
            assert err == {"type": "error", "code": "auth_timeout", "message": "no auth frame within 0.3 s"}
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    with trio.fail_after(10):
        await gw.stop()


async def test_wrong_key_is_decrypt_failed_and_repeated_failures_close(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with client(gateway) as c:
            server_pk = crypto.b64decode(c.auth_ok["e2e_pk"])
            stranger = crypto.ClientBoxChannel(PrivateKey.generate(), server_pk)
            for _ in range(3):
                await c.ws.send_message(stranger.seal(b'{"type":"message","text":"hi"}'))
                err = await c.receive()
                assert err["type"] == "error" and err["code"] == "decrypt_failed"
            with pytest.raises(ConnectionClosed):
                await c.ws.get_message()


async def test_a_replayed_frame_is_refused(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with client(gateway) as c:
            frame = c.channel.seal(msgspec.json.encode({"type": "message", "text": "once"}))
            await c.ws.send_message(frame)
            await until(c, "result")
            await c.ws.send_message(frame)
            err = await c.receive()
            assert err["code"] == "decrypt_failed" and "replayed" in err["message"]


async def test_a_reflected_server_frame_is_refused(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with client(gateway) as c:
            await c.send_message("mirror")
            captured = await c.ws.get_message()  # a frame the server sent, still encrypted
            assert isinstance(captured, str)
            await c.ws.send_message(captured)
            frames = await until(c, "error")
            assert frames[-1]["code"] == "decrypt_failed" and "reflected" in frames[-1]["message"]


async def test_session_phase_errors_are_encrypted(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with client(gateway) as c:
            await c.send({"type": "message", "text": "   "})
            assert (await c.receive())["code"] == "empty"
            await c.send({"type": "dance"})
            assert (await c.receive())["code"] == "unknown_type"
            await c.ws.send_message(c.channel.seal(b"[1,2]"))
            assert (await c.receive())["code"] == "decrypt_failed"


async def test_rate_limit_and_frame_size(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, ws={"messages_per_minute": 2, "max_frame_bytes": 4096})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with client(gw) as c:
            for _ in range(2):
                await c.send_message("x")
                await until(c, "result")
            await c.send_message("x")
            assert (await c.receive())["code"] == "rate_limited"
            await c.send_message("y" * 5000)
            assert (await c.receive())["code"] == "frame_too_large"
            with pytest.raises(ConnectionClosed):
                await c.ws.get_message()
            assert c.ws.closed is not None and c.ws.closed.code == 1009
        await gw.stop()


async def test_two_connections_on_one_key_both_see_the_stream(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with client(gateway, chat_id=2) as a, client(gateway, chat_id=2) as b:
            assert a.auth_ok["e2e_pk"] != b.auth_ok["e2e_pk"], "a fresh server key per connection"
            await a.send_message("shared words here")
            fa = await until(a, "result")
            fb = await until(b, "result")
    assert deltas(fa) == deltas(fb) == "shared words here"


async def test_notifications_reach_every_authenticated_connection(gateway: RunningGateway) -> None:
    note = {"id": "n1", "title": "cron", "body": "done", "read": False}
    with trio.fail_after(10):
        async with client(gateway) as a, client(gateway, chat_id=7) as b:
            assert len(gateway.runtime.notifications) == 2  # subscribed before auth_ok was sent
            gateway.runtime.notifications.publish(note)
            assert await a.receive() == {"type": "notification", "notification": note}
            assert await b.receive() == {"type": "notification", "notification": note}


async def test_unknown_path_is_not_a_websocket(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        assert url(gateway).endswith("/ws")
        async with httpx.AsyncClient(base_url=gateway.base_url) as http:
            assert (await http.get("/ws")).status_code in (400, 404, 426)


async def test_every_frame_counts_against_a_wider_rate_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, ws={"messages_per_minute": 1})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with client(gw) as c:
            for _ in range(10):
                await c.abort()
                assert (await c.receive())["type"] == "abort_ok"
            await c.abort()
            assert (await c.receive())["code"] == "rate_limited"
        await gw.stop()


async def test_the_server_sends_protocol_pings(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, ws={"ping_interval": 0.05})
    gw = await start_gateway(nursery, config, paths)
    host, port = gw.base_url.removeprefix("http://").split(":")
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream(host, int(port))
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=host, target="/ws")))
        pings = 0
        while pings < 2:
            data = await stream.receive_some(4096)
            assert data, "the server closed the socket"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Ping):
                    pings += 1
                    await stream.send_all(ws.send(event.response()))
        await stream.aclose()
        await gw.stop()


async def test_shutdown_closes_connections_with_going_away(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, server={"graceful_timeout": 30.0})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(10):
        async with client(gw) as c:
            with trio.fail_after(15):  # far below the graceful timeout (30 s): the connection did not hold it up
                await gw.stop()
            with pytest.raises(ConnectionClosed):
                await c.ws.get_message()
            assert c.ws.closed is not None and c.ws.closed.code == 1001


async def test_shutdown_with_pings_does_not_wait_out_the_ping_interval(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Hypercorn's ping task sleeps out its interval after the socket closed; the gateway must not wait for it
    # (it would hold every restart with a connected client for the whole graceful timeout).
    config, paths = make_config(tmp_path, server={"graceful_timeout": 30.0}, ws={"ping_interval": 20.0})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(10):
        async with client(gw) as c:
            await c.send_message("hi")
            await until(c, "result")
            with trio.fail_after(15):  # below both the ping interval (20 s) and the graceful timeout (30 s)
                await gw.stop()
            with pytest.raises(ConnectionClosed):
                await c.ws.get_message()


async def test_a_client_written_from_the_protocol_notes_alone(gateway: RunningGateway) -> None:
    """No gateway code on the client side: PyNaCl's Box, base64 and json, exactly as existing clients do it."""
    import base64
    import json

    from nacl.public import Box, PublicKey

    own = PrivateKey.generate()
    with trio.fail_after(20):
        async with raw(gateway) as ws:
            hello = {"type": "auth", "token": gateway.token, "e2e_pk": base64.b64encode(bytes(own.public_key)).decode()}
            await ws.send_message(json.dumps(hello | {"chat_id": 31, "channel_id": 4}))
            ok = json.loads(await ws.get_message())
            assert ok["type"] == "auth_ok" and ok["chat_id"] == 31 and ok["channel_id"] == 4
            box = Box(own, PublicKey(base64.b64decode(ok["e2e_pk"])))

            async def send(obj: dict[str, object]) -> None:
                frame = base64.b64encode(box.encrypt(json.dumps(obj, separators=(",", ":")).encode())).decode()
                await ws.send_message(frame)

            async def receive() -> dict[str, object]:
                frame = await ws.get_message()
                assert isinstance(frame, str), "every session-phase frame is a text frame"
                raw_bytes = base64.b64decode(frame, validate=True)  # standard base64 with padding
                assert base64.b64encode(raw_bytes).decode() == frame
                plain = box.decrypt(raw_bytes[24:], raw_bytes[:24])  # nonce (24 bytes) ‖ ciphertext with its MAC
                obj: dict[str, object] = json.loads(plain)
                assert plain == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()  # compact JSON
                return obj

            await send({"type": "message", "text": "legacy client"})
            frames = [await receive()]
            while frames[-1]["type"] != "result":
                frames.append(await receive())
            assert "".join(str(f["data"]) for f in frames if f["type"] == "text_delta") == "legacy client"
            assert {k: frames[-1][k] for k in ("text", "stream_fallback", "files")} == {
                "text": "legacy client",
                "stream_fallback": False,
                "files": [],
            }
            await send({"type": "message", "text": "/Stop"})
            assert (await receive()) == {"type": "abort_ok", "killed": 0}


async def test_connections_past_ws_max_connections_are_refused_with_1013(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, ws={"max_connections": 2}))
    with trio.fail_after(20):
        async with client(gw) as a, client(gw, chat_id=2) as b:
            async with raw(gw) as third:
                err = await plain(third)
                assert err["type"] == "error" and err["code"] == "TOO_MANY_CONNECTIONS" and err["message"]
                with pytest.raises(ConnectionClosed):
                    await third.get_message()
                assert third.closed is not None and third.closed.code == 1013
            assert gw.runtime.connections == 2
            assert a.ws.closed is None and b.ws.closed is None, "the open ones are untouched"

        # Once they leave, the next is let in.
        async def free() -> bool:
            return gw.runtime.connections == 0

        await wait_for(free, timeout=10)
        async with client(gw) as again:
            assert again.ws.closed is None
    await gw.stop()


async def test_one_connection_breaking_the_http_server_does_not_stop_the_gateway(gateway: RunningGateway) -> None:
    # hypercorn issue #225: a WebSocket upgrade request followed by stray bytes makes hypercorn's task for that
    # connection raise, which ended `serve` and with it the whole gateway (one unauthenticated request).
    host, port = gateway.base_url.removeprefix("http://").split(":")
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n\r\nx\n"
    )
    with trio.fail_after(20):
        for _ in range(3):
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(upgrade)
            try:
                while await stream.receive_some(4096):  # answered or dropped: either way it ends
                    pass
            except trio.BrokenResourceError:
                pass  # reset by the server
            await stream.aclose()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{gateway.base_url}/health")).status_code == 200
        async with client(gateway) as c:
            await c.send_message("still serving")
            assert deltas(await until(c, "result")) == "still serving"
