"""WebSocket compression only for large messages: wsproto peers, and a real gateway with a client offering it."""

from __future__ import annotations

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from gateway.http.wsdeflate import THRESHOLD, ThresholdDeflate
from tests.conftest import RunningGateway

RSV1 = 0x40


def _pair() -> tuple[WSConnection, WSConnection]:
    """A client offering permessage-deflate and a server answering with ThresholdDeflate, handshake done."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/ws", extensions=[PerMessageDeflate()])))
    request = next(server.events())
    assert isinstance(request, Request)
    client.receive_data(server.send(AcceptConnection(extensions=[ThresholdDeflate()])))
    accepted = next(client.events())
    assert isinstance(accepted, AcceptConnection) and accepted.extensions, "deflate was negotiated"
    return client, server


def _received(client: WSConnection, raw: bytes) -> str:
    client.receive_data(raw)
    texts = [e.data for e in client.events() if isinstance(e, Message)]
    assert len(texts) == 1
    return str(texts[0])


def test_small_messages_go_uncompressed_large_ones_compressed_and_both_arrive() -> None:
    client, server = _pair()
    small, large = "w" * 80, "word " * THRESHOLD
    for text in (small, large, small, large):  # the compressor's context survives the uncompressed ones
        raw = server.send(TextMessage(text))
        assert bool(raw[0] & RSV1) == (len(text) >= THRESHOLD)
        assert len(raw) < len(text) if len(text) >= THRESHOLD else len(raw) == len(text) + 2
        assert _received(client, raw) == text


async def test_the_gateway_leaves_a_small_frame_uncompressed_for_a_client_offering_deflate(
    gateway: RunningGateway,
) -> None:
    host, port = gateway.base_url.removeprefix("http://").split(":")
    ws = WSConnection(ConnectionType.CLIENT)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        try:
            await stream.send_all(ws.send(Request(host=host, target="/ws", extensions=[PerMessageDeflate()])))
            raw = b""
            events: list[object] = []

            async def until(kind: type) -> None:
                nonlocal raw
                while not any(isinstance(e, kind) for e in events):
                    data = await stream.receive_some(65536)
                    assert data, "the server closed the socket before answering"
                    raw += data
                    ws.receive_data(data)
                    events.extend(ws.events())

            await until(AcceptConnection)
            await stream.send_all(ws.send(TextMessage('{"type": "auth", "token": "wrong"}')))
            await until(Message)
        finally:
            await stream.aclose()
    accepted = next(e for e in events if isinstance(e, AcceptConnection))
    assert accepted.extensions and accepted.extensions[0].name == "permessage-deflate"
    error = next(e for e in events if isinstance(e, Message))
    assert '"auth_failed"' in str(error.data)
    frame = raw[raw.index(b"\r\n\r\n") + 4 :]  # the first frame after the 101 response
    assert not frame[0] & RSV1, "a small frame is sent uncompressed"
