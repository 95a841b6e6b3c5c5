"""The v2 `/ws` handshake over real sockets: pinned identity, token proof, counter-nonce frames."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway.ws.client import Client, HandshakeError, connect, handshake_v2
from gateway.ws.identity import identity_fingerprint
from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.wshelpers import client, deltas, raw, until, url


def _close_of(closed: pytest.ExceptionInfo[ConnectionClosed]) -> tuple[int, str | None]:
    reason = closed.value.reason
    assert reason is not None
    return reason.code, reason.reason


async def test_v2_handshake_with_a_pinned_key_then_a_turn(gateway: RunningGateway) -> None:
    pin = identity_fingerprint(gateway.runtime.paths)
    with trio.fail_after(20):
        async with client(gateway, v2=True, pin=pin, chat_id=11) as c:
            assert c.version == 2 and c.auth_ok["type"] == "auth_ok" and c.auth_ok["chat_id"] == 11
            await c.send_message("over v2")
            frames = await until(c, "turn_ended")
    types = [f["type"] for f in frames]
    assert types[0] == "turn_started" and "result" in types
    assert deltas(frames) == "over v2"
    assert frames[-1]["state"] == "completed"


async def test_v2_wrong_token_is_auth_failed(gateway: RunningGateway) -> None:
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with connect(url(gateway), "not-the-token-at-all-000", v2=True):
            pass
    assert info.value.code == "auth_failed"


async def test_v2_refuses_a_server_that_does_not_match_the_pin(gateway: RunningGateway) -> None:
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with connect(url(gateway), gateway.token, v2=True, pin="gw1:0000-0000-0000-0000-0000-0000-0000-0000"):
            pass
    assert info.value.code == "pin_mismatch"


async def _closed_without_a_word(c: Client) -> None:
    """The server answers nothing to a v2 frame it cannot open: the next event is the close, 1008 decrypt_failed."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frame = await c.ws.get_message()
            obj = msgspec.json.decode(c.channel.open(frame))
            # Frames of the turn still streaming may come first; never an answer to the bad frame.
            assert obj.get("type") != "error", obj
    assert _close_of(closed) == (1008, "decrypt_failed")


async def test_v2_a_replayed_or_reflected_frame_closes_the_connection(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with client(gateway, v2=True) as c:
            frame = c.channel.seal(msgspec.json.encode({"type": "message", "text": "once"}))
            await c.ws.send_message(frame)
            await until(c, "turn_ended")
            await c.ws.send_message(frame)  # replayed: its counter is behind
            await _closed_without_a_word(c)
        async with client(gateway, v2=True) as c:
            await c.send_message("mirror")
            captured = await c.ws.get_message()
            c.channel.open(captured)  # keep our receive counter in step with the server's frames
            await c.ws.send_message(captured)  # reflected: the server-to-client key does not open it
            await _closed_without_a_word(c)


async def test_v2_the_token_never_crosses_the_wire(gateway: RunningGateway) -> None:
    sent: list[str | bytes] = []
    with trio.fail_after(10):
        async with raw(gateway) as ws:
            original = ws.send_message

            async def spy(message: str | bytes) -> None:
                sent.append(message)
                await original(message)

            ws.send_message = spy  # type: ignore[method-assign]
            c = await handshake_v2(ws, gateway.token, pin=None, chat_id=None, channel_id=None, resume_from=None)
            await c.send_message("hi")
            await until(c, "turn_ended")
    assert len(sent) == 3  # hello, proof, message
    assert all(gateway.token.encode() not in (m.encode() if isinstance(m, str) else m) for m in sent)


async def test_v2_an_oversized_or_rate_limited_frame_closes_without_an_encrypted_answer(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config, paths = make_config(tmp_path, ws={"ping_interval": 0, "messages_per_minute": 1, "max_frame_bytes": 4096})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with client(gw, v2=True) as c:
            await c.ws.send_message(bytes(5000))
            with pytest.raises(ConnectionClosed) as closed:
                await c.ws.get_message()
            assert _close_of(closed) == (1009, "frame_too_large")
        # 10 frames a minute (10 x messages_per_minute): the 11th is not opened, so the counters could not agree
        # again; the connection ends there rather than at the next frame with a misleading decrypt failure.
        async with client(gw, v2=True) as c:
            for _ in range(11):
                await c.send({"type": "unknown-but-cheap"})
            errors = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    errors.append((await c.receive())["code"])
            assert errors == ["unknown_type"] * 10
            assert _close_of(closed) == (1008, "rate_limited")
        await gw.stop()
