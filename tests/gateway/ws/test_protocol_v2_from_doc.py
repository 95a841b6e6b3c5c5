"""A v2 `/ws` client written from docs/protocol.md alone (pynacl primitives, none of the gateway's crypto or client
code), against a real gateway: if the doc leaves out a label, a layout or a byte order, this cannot connect."""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from nacl.bindings import crypto_kx_client_session_keys, crypto_scalarmult
from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.public import PrivateKey
from nacl.secret import SecretBox
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.ws.identity import identity_fingerprint  # only the out-of-band pin, as `gateway token` prints it
from tests.conftest import RunningGateway

# ---- "Primitives and encodings" ----


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def H(data: bytes, *, key: bytes = b"", person: bytes, size: int = 32) -> bytes:
    return bytes(blake2b(data, digest_size=size, key=key, person=person, encoder=RawEncoder))


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def kx_client(own: PrivateKey, server_pk: bytes) -> tuple[bytes, bytes]:
    """crypto_kx as the doc spells it: the client's (rx, tx)."""
    client_pk = bytes(own.public_key)
    q = crypto_scalarmult(bytes(own), server_pk)
    h = bytes(blake2b(q + client_pk + server_pk, digest_size=64, encoder=RawEncoder))
    return h[:32], h[32:]


def fingerprint(public_key: bytes) -> str:
    hexed = H(public_key, person=b"gw-fingerprint", size=16).hex()
    return "gw1:" + "-".join(hexed[i : i + 4] for i in range(0, 32, 4))


class Channel:
    """Frames: SecretBox(K_dir), nonce = 16 zero bytes ‖ u64be(counter) not sent, counters from 0 per direction."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        self.tx, self.rx = SecretBox(send_key), SecretBox(receive_key)
        self.sent = self.received = 0

    @staticmethod
    def nonce(n: int) -> bytes:
        return bytes(16) + struct.pack(">Q", n)

    def seal(self, obj: dict[str, Any]) -> bytes:
        plain = json.dumps(obj, separators=(",", ":")).encode()
        frame = bytes(self.tx.encrypt(plain, self.nonce(self.sent)).ciphertext)
        self.sent += 1
        return frame

    def open(self, frame: bytes | str) -> dict[str, Any]:
        assert isinstance(frame, bytes), f"v2 frames are binary, got {frame!r}"
        obj: dict[str, Any] = json.loads(self.rx.decrypt(frame, self.nonce(self.received)))
        self.received += 1
        return obj


class Session:
    def __init__(self, ws: WebSocketConnection, channel: Channel, auth_ok: dict[str, Any]) -> None:
        self.ws, self.channel, self.auth_ok = ws, channel, auth_ok

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_message(self.channel.seal(obj))

    async def receive(self) -> dict[str, Any]:
        return self.channel.open(await self.ws.get_message())


async def prove(ws: WebSocketConnection, token: str, pin: str, **scope: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Hello, check the challenge, send the proof; return K_c2s, K_s2c, s_e.pub and TH."""
    c_e = PrivateKey.generate()
    hello = json.dumps({"type": "auth", "v": 2, "e2e_pk": b64(bytes(c_e.public_key)), "nonce": b64(os.urandom(32))})
    hello = hello[:-1] + "".join(f', "{k}": {v}' for k, v in scope.items()) + "}"  # any order: hashed as sent
    await ws.send_message(hello)
    challenge = json.loads(await ws.get_message())
    assert challenge["type"] == "auth_challenge" and challenge["v"] == 2, challenge
    server_pk, s_e_pub = unb64(challenge["server_pk"]), unb64(challenge["e2e_pk"])
    n_s, p_s = unb64(challenge["nonce"]), unb64(challenge["proof"])
    assert fingerprint(server_pk) == pin, "the pinned key"

    th = H(lp(b"gw-e2e-v2") + lp(hello.encode()) + lp(server_pk) + lp(s_e_pub) + lp(n_s), person=b"gw-v2-th")
    sdh = crypto_scalarmult(bytes(c_e), server_pk)
    assert p_s == H(th, key=H(sdh, person=b"gw-v2-sdh"), person=b"gw-v2-server"), "the server holds S"
    k_t = H(token.encode("utf-8"), person=b"gw-v2-token")
    await ws.send_message(json.dumps({"type": "auth_proof", "proof": b64(H(th, key=k_t, person=b"gw-v2-client"))}))

    rx, tx = kx_client(c_e, s_e_pub)
    assert (rx, tx) == crypto_kx_client_session_keys(bytes(c_e.public_key), bytes(c_e), s_e_pub)
    k_c2s = H(lp(tx) + lp(sdh) + lp(th), key=k_t, person=b"gw-v2-c2s")
    k_s2c = H(lp(rx) + lp(sdh) + lp(th), key=k_t, person=b"gw-v2-s2c")
    return k_c2s, k_s2c, s_e_pub, th


async def handshake(ws: WebSocketConnection, token: str, pin: str, **scope: int) -> Session:
    k_c2s, k_s2c, s_e_pub, _ = await prove(ws, token, pin, **scope)
    channel = Channel(send_key=k_c2s, receive_key=k_s2c)
    auth_ok = channel.open(await ws.get_message())  # the server's frame 0
    assert auth_ok["type"] == "auth_ok" and unb64(auth_ok["e2e_pk"]) == s_e_pub, auth_ok
    return Session(ws, channel, auth_ok)


def _close_of(closed: pytest.ExceptionInfo[ConnectionClosed]) -> tuple[int, str | None]:
    reason = closed.value.reason
    assert reason is not None
    return reason.code, reason.reason


@asynccontextmanager
async def session(gw: RunningGateway, token: str | None = None, **scope: int) -> AsyncIterator[Session]:
    pin = identity_fingerprint(gw.runtime.paths)
    async with open_websocket_url(gw.ws_url + "/ws") as ws:
        yield await handshake(ws, token or gw.token, pin, **scope)


async def test_a_client_written_from_the_doc_completes_a_turn(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with session(gateway, chat_id=7, channel_id=3) as s:
            assert (s.auth_ok["chat_id"], s.auth_ok["channel_id"]) == (7, 3)
            await s.send({"type": "message", "text": "written from the doc"})
            frames = [await s.receive()]
            while frames[-1]["type"] != "turn_ended":
                frames.append(await s.receive())
    streamed = "".join(f["data"] for f in frames if f["type"] == "text_delta")
    assert streamed == "written from the doc"
    assert frames[0]["type"] == "turn_started" and frames[-1]["state"] == "completed"
    assert [f["text"] for f in frames if f["type"] == "result"] == ["written from the doc"]


async def test_what_the_doc_says_is_sent_on_errors(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        # A wrong token: a plaintext auth_failed, then close 1008.
        async with open_websocket_url(gateway.ws_url + "/ws") as ws:
            await prove(ws, "not-the-gateway-token-000", identity_fingerprint(gateway.runtime.paths))
            answer = await ws.get_message()
            assert isinstance(answer, str) and json.loads(answer)["code"] == "auth_failed", answer
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert _close_of(closed)[0] == 1008
        # A frame that does not open (a replay of the client's frame 0): nothing at all, then close 1008.
        async with session(gateway) as s:
            await s.send({"type": "abort"})
            s.channel.sent = 0
            await s.send({"type": "abort"})
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # the first abort's `abort_ok` may come first; never an error for the replay
                    assert (await s.receive())["type"] != "error"
            assert _close_of(closed) == (1008, "decrypt_failed")
