"""The `/ws` auth phase (v1 plaintext auth frame, v2 pinned-key handshake) and its raw-ASGI frame transport."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import trio
from nacl.public import PrivateKey

from gateway.http.credentials import token_matches
from gateway.http.jsondepth import too_deep
from gateway.types import Receive, Send
from gateway.ws import crypto

MAX_AUTH_FRAME = 64 * 1024
_WRONG_TOKEN = "not the gateway token (a typo, or it was rotated); `gateway token` prints the current one"
Frame = str | bytes


class AuthError(Exception):
    """The auth phase failed; `code` is the plaintext error code the client gets before the socket closes."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, with code `rate_limited`


Admit = Callable[[], None]  # raises AuthError("rate_limited") while the client's address must wait


def _admit_all() -> None:
    return None


class Disconnected(Exception):
    """The client went away."""


class Transport(Protocol):
    async def receive(self) -> Frame: ...

    async def send_text(self, text: str) -> None: ...


class Channel(Protocol):
    """Seals and opens session-phase frames (v1: base64 text; v2: binary)."""

    binary: bool

    def seal_frame(self, plaintext: bytes) -> Frame: ...

    def open_frame(self, frame: Frame) -> bytes: ...


class V1Channel:
    binary = False

    def __init__(self, box: crypto.BoxChannel) -> None:
        self.box = box

    def seal_frame(self, plaintext: bytes) -> Frame:
        return self.box.seal(plaintext)

    def open_frame(self, frame: Frame) -> bytes:
        if not isinstance(frame, str):
            raise crypto.DecryptError("v1 frames are base64 text frames")
        return self.box.open(frame)


class V2Channel:
    binary = True

    def __init__(self, counter: crypto.CounterChannel) -> None:
        self.counter = counter

    def seal_frame(self, plaintext: bytes) -> Frame:
        return self.counter.seal(plaintext)

    def open_frame(self, frame: Frame) -> bytes:
        if not isinstance(frame, bytes):
            raise crypto.DecryptError("v2 frames are binary frames")
        return self.counter.open(frame)


class AsgiTransport:
    """The ASGI receive/send pair of one WebSocket as a frame transport (for the handshake and the connection)."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.closed = False

    async def receive(self) -> Frame:
        while True:
            msg = await self._receive()
            kind = msg["type"]
            if kind == "websocket.disconnect":
                self.closed = True
                raise Disconnected()
            if kind == "websocket.receive":
                text = msg.get("text")
                return text if text is not None else bytes(msg.get("bytes") or b"")

    async def send_text(self, text: str) -> None:
        await self.send_frame(text)

    async def send_frame(self, frame: Frame) -> None:
        if self.closed:
            raise Disconnected()
        try:
            if isinstance(frame, str):
                await self._send({"type": "websocket.send", "text": frame})
            else:
                await self._send({"type": "websocket.send", "bytes": frame})
        except (OSError, RuntimeError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.closed = True
            raise Disconnected() from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            pass  # already gone: nothing to tell


class Authenticated(msgspec.Struct, frozen=True):
    version: int
    chat_id: int
    channel_id: int | None
    resume_from: int | None
    channel: Channel
    server_public: bytes  # the per-connection (v1) or ephemeral (v2) key sent to the client


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _decode(frame: Frame, expected: str) -> dict[str, Any]:
    if not isinstance(frame, str) or len(frame) > MAX_AUTH_FRAME:
        raise AuthError("auth_required", f"the first frame must be a JSON text frame with type {expected!r}")
    try:
        obj = None if too_deep(frame) else msgspec.json.decode(frame)
    except msgspec.DecodeError:
        obj = None
    if not isinstance(obj, dict) or obj.get("type") != expected:
        raise AuthError("auth_required", f"expected a JSON frame with type {expected!r}")
    return obj


async def handshake(
    transport: Transport, *, token: str, identity: PrivateKey, default_chat: int, admit: Admit = _admit_all
) -> Authenticated:
    """Run the auth phase; raise AuthError (send it in plaintext, then close) or Disconnected.

    `admit()` runs right before the credential is checked (no await in between, so many sockets of one address
    cannot all be checked before the first failure is counted).
    """
    first = await transport.receive()
    hello = _decode(first, "auth")
    chat_id = _positive_int(hello.get("chat_id")) or default_chat
    channel_id = _positive_int(hello.get("channel_id"))
    resume = hello.get("resume_from")
    resume_from = resume if isinstance(resume, int) and not isinstance(resume, bool) and resume >= 0 else None
    if hello.get("v") == 2:
        assert isinstance(first, str)
        channel, server_public = await _handshake_v2(
            transport, first, hello, token=token, identity=identity, admit=admit
        )
        return Authenticated(2, chat_id, channel_id, resume_from, channel, server_public)
    presented = hello.get("token")
    admit()
    if not token_matches(presented if isinstance(presented, str) else None, token):
        raise AuthError("auth_failed", _WRONG_TOKEN)
    try:
        client_pk = crypto.parse_public_key(hello.get("e2e_pk"))
    except ValueError as exc:
        raise AuthError("auth_failed", str(exc)) from None
    own = PrivateKey.generate()  # fresh per connection
    return Authenticated(
        1, chat_id, channel_id, resume_from, V1Channel(crypto.BoxChannel(own, client_pk)), bytes(own.public_key)
    )


async def _handshake_v2(
    transport: Transport, raw_hello: str, hello: dict[str, Any], *, token: str, identity: PrivateKey, admit: Admit
) -> tuple[Channel, bytes]:
    try:
        client_eph = crypto.parse_public_key(hello.get("e2e_pk"))
        n_c = crypto.b64decode(hello["nonce"]) if isinstance(hello.get("nonce"), str) else b""
    except (ValueError, crypto.DecryptError) as exc:
        raise AuthError("auth_failed", f"v2 hello: {exc}") from None
    if len(n_c) != 32:
        raise AuthError("auth_failed", "v2 hello: nonce must be 32 random bytes in base64")
    eph = PrivateKey.generate()
    n_s = os.urandom(32)
    static_public = bytes(identity.public_key)
    th = crypto.transcript(raw_hello.encode(), static_public, bytes(eph.public_key), n_s)
    sdh = crypto.static_dh(bytes(identity), client_eph)
    challenge = {
        "type": "auth_challenge",
        "v": 2,
        "server_pk": crypto.b64encode(static_public),
        "e2e_pk": crypto.b64encode(bytes(eph.public_key)),
        "nonce": crypto.b64encode(n_s),
        "proof": crypto.b64encode(crypto.server_proof(th, sdh)),
    }
    await transport.send_text(msgspec.json.encode(challenge).decode())
    answer = _decode(await transport.receive(), "auth_proof")
    try:
        proof = crypto.b64decode(answer["proof"]) if isinstance(answer.get("proof"), str) else b""
    except crypto.DecryptError:
        proof = b""
    tkey = crypto.token_key(token)
    admit()
    if not crypto.proofs_match(proof, crypto.client_proof(th, tkey)):
        raise AuthError("auth_failed", f"the token proof does not match: {_WRONG_TOKEN}")
    keys = crypto.server_session_keys(eph, client_eph, sdh, th, tkey)
    return V2Channel(crypto.CounterChannel(keys)), bytes(eph.public_key)
