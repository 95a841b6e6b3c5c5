"""The v2 `/ws` handshake over real sockets: pinned identity, token proof, counter-nonce frames."""

from __future__ import annotations

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway.client import HandshakeError, connect, handshake_v2
from gateway.identity import identity_fingerprint
from tests.conftest import RunningGateway
from tests.gateway.wshelpers import client, deltas, raw, until, url


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


async def test_v2_a_replayed_or_reflected_frame_closes_the_connection(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with client(gateway, v2=True) as c:
            frame = c.channel.seal(msgspec.json.encode({"type": "message", "text": "once"}))
            await c.ws.send_message(frame)
            await until(c, "turn_ended")
            await c.ws.send_message(frame)  # replayed: its counter is behind
            with pytest.raises(ConnectionClosed):
                while True:
                    await c.ws.get_message()
        async with client(gateway, v2=True) as c:
            await c.send_message("mirror")
            captured = await c.ws.get_message()
            await c.ws.send_message(captured)  # reflected: the server-to-client key does not open it
            with pytest.raises(ConnectionClosed):
                while True:
                    await c.ws.get_message()


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
