"""A Python client of `/ws` (v1 and v2 handshakes) on trio-websocket; `gateway chat` and the tests use it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import msgspec
import trio
from nacl.public import PrivateKey
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.ws import crypto


class HandshakeError(Exception):
    """The server refused the handshake (`code` is its error code) or could not be verified."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Sealer(Protocol):
    def seal(self, plaintext: bytes) -> Any: ...

    def open(self, frame: Any) -> bytes: ...


class Client:
    """One authenticated connection. `send`/`receive` carry decrypted JSON objects."""

    def __init__(
        self,
        ws: WebSocketConnection,
        channel: _Sealer,
        auth_ok: dict[str, Any],
        version: int,
        server_key: bytes | None = None,
    ) -> None:
        self.ws = ws
        self.channel = channel
        self.auth_ok = auth_ok
        self.version = version
        self.server_key = server_key  # v2: the server's long-term identity key (what a pin names)
        self.last_seq: int = int(auth_ok.get("last_seq") or 0)

    async def send(self, obj: dict[str, Any]) -> None:
        """Encrypt and send one frame. Raises trio_websocket.ConnectionClosed when the socket is gone."""
        await self.ws.send_message(self.channel.seal(msgspec.json.encode(obj)))

    async def send_message(self, text: str) -> None:
        await self.send({"type": "message", "text": text})

    async def abort(self) -> None:
        await self.send({"type": "abort"})

    async def receive(self) -> dict[str, Any]:
        """Wait for the next frame and decrypt it; remember its `seq` for a later `resume_from`."""
        frame = await self.ws.get_message()
        obj: dict[str, Any] = msgspec.json.decode(self.channel.open(frame))
        seq = obj.get("seq")
        if isinstance(seq, int):
            self.last_seq = max(self.last_seq, seq)
        return obj

    async def frames(self) -> AsyncIterator[dict[str, Any]]:
        """Every frame until the server closes the socket."""
        try:
            while True:
                yield await self.receive()
        except ConnectionClosed:
            return


async def _plain(ws: WebSocketConnection) -> dict[str, Any]:
    obj = msgspec.json.decode(await ws.get_message())
    if not isinstance(obj, dict):
        raise HandshakeError("protocol", "the server sent a non-object frame")
    if obj.get("type") == "error":
        raise HandshakeError(str(obj.get("code")), str(obj.get("message")))
    return obj


def _scope(chat_id: int | None, channel_id: int | None, resume_from: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if chat_id is not None:
        out["chat_id"] = chat_id
    if channel_id is not None:
        out["channel_id"] = channel_id
    if resume_from is not None:
        out["resume_from"] = resume_from
    return out


async def handshake_v1(
    ws: WebSocketConnection, token: str, *, chat_id: int | None, channel_id: int | None, resume_from: int | None
) -> Client:
    own = PrivateKey.generate()
    hello = {"type": "auth", "token": token, "e2e_pk": crypto.b64encode(bytes(own.public_key))}
    await ws.send_message(msgspec.json.encode(hello | _scope(chat_id, channel_id, resume_from)).decode())
    auth_ok = await _plain(ws)
    if auth_ok.get("type") != "auth_ok":
        raise HandshakeError("protocol", f"expected auth_ok, got {auth_ok.get('type')!r}")
    server_pk = crypto.parse_public_key(auth_ok.get("e2e_pk"))
    return Client(ws, crypto.ClientBoxChannel(own, server_pk), auth_ok, 1)


class _ClientCounter:
    def __init__(self, channel: crypto.CounterChannel) -> None:
        self._c = channel

    def seal(self, plaintext: bytes) -> bytes:
        return self._c.seal(plaintext)

    def open(self, frame: Any) -> bytes:
        if not isinstance(frame, bytes):
            raise crypto.DecryptError("v2 frames are binary")
        return self._c.open(frame)


async def handshake_v2(
    ws: WebSocketConnection,
    token: str,
    *,
    pin: str | None,
    chat_id: int | None,
    channel_id: int | None,
    resume_from: int | None,
) -> Client:
    """The v2 handshake; `pin` is the server fingerprint (`gateway token` prints it). None trusts on first use."""
    eph = PrivateKey.generate()
    hello = {"type": "auth", "v": 2, "e2e_pk": crypto.b64encode(bytes(eph.public_key))}
    hello |= {"nonce": crypto.b64encode(os.urandom(32))} | _scope(chat_id, channel_id, resume_from)
    raw_hello = msgspec.json.encode(hello).decode()
    await ws.send_message(raw_hello)
    challenge = await _plain(ws)
    try:
        server_static = crypto.parse_public_key(challenge.get("server_pk"))
        server_eph = crypto.parse_public_key(challenge.get("e2e_pk"))
        n_s = crypto.b64decode(str(challenge.get("nonce")))
        proof = crypto.b64decode(str(challenge.get("proof")))
    except (ValueError, crypto.DecryptError) as exc:
        raise HandshakeError("protocol", f"bad auth_challenge: {exc}") from None
    if pin is not None and crypto.fingerprint(server_static) != pin:
        raise HandshakeError("pin_mismatch", "the server's identity key does not match the pinned fingerprint")
    th = crypto.transcript(raw_hello.encode(), server_static, server_eph, n_s)
    sdh = crypto.static_dh(bytes(eph), server_static)
    if not crypto.proofs_match(proof, crypto.server_proof(th, sdh)):
        raise HandshakeError("bad_server_proof", "the server does not hold the key it claims")
    tkey = crypto.token_key(token)
    answer = {"type": "auth_proof", "proof": crypto.b64encode(crypto.client_proof(th, tkey))}
    await ws.send_message(msgspec.json.encode(answer).decode())
    channel = _ClientCounter(crypto.CounterChannel(crypto.client_session_keys(eph, server_eph, sdh, th, tkey)))
    first = await ws.get_message()
    if isinstance(first, str):
        obj = msgspec.json.decode(first)
        raise HandshakeError(str(obj.get("code")), str(obj.get("message")))
    auth_ok: dict[str, Any] = msgspec.json.decode(channel.open(first))
    return Client(ws, channel, auth_ok, 2, server_static)


@asynccontextmanager
async def connect(
    url: str,
    token: str,
    *,
    chat_id: int | None = None,
    channel_id: int | None = None,
    resume_from: int | None = None,
    v2: bool = False,
    pin: str | None = None,
    timeout: float = 10.0,
) -> AsyncIterator[Client]:
    """Open `url` (`ws://host:port/ws`), authenticate, yield the Client; closes the socket on exit.

    Raises HandshakeError when the server refuses, trio.TooSlowError when the handshake takes over `timeout`.
    """
    async with open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws:
        with trio.fail_after(timeout):
            if v2:
                client = await handshake_v2(
                    ws, token, pin=pin, chat_id=chat_id, channel_id=channel_id, resume_from=resume_from
                )
            else:
                client = await handshake_v1(ws, token, chat_id=chat_id, channel_id=channel_id, resume_from=resume_from)
        yield client
