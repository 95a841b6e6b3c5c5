"""E2E crypto for `/ws`: the v1 NaCl Box channel and the v2 pinned-key handshake; pure and sync (no trio)."""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct

import msgspec
from nacl.bindings import (
    crypto_kx_client_session_keys,
    crypto_kx_server_session_keys,
    crypto_scalarmult,
)
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox

KEY_BYTES = 32
NONCE_BYTES = 24
MAC_BYTES = 16
# The server's v1 nonces: a random 16-byte prefix per connection then an 8-byte counter, so that a frame
# the server sent is recognised (and refused) when an attacker reflects it back to the server.
_PREFIX_BYTES = 16


_PROBE = bytes(PrivateKey.generate())


class DecryptError(Exception):
    """A frame could not be opened: bad base64, wrong key, tampered, replayed or reflected."""


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as the wire uses."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode standard base64 strictly; raise DecryptError on anything else."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise DecryptError("not valid base64") from exc


def parse_public_key(text: object) -> bytes:
    """Return the 32 raw bytes of a base64 Curve25519 public key; raise ValueError when it is not one."""
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError("e2e_pk must be a base64 string")
    try:
        raw = b64decode(text)
    except DecryptError as exc:
        raise ValueError("e2e_pk is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise ValueError(f"e2e_pk must decode to {KEY_BYTES} bytes")
    try:
        # libsodium refuses low-order points (the shared secret would be all zeros); find out here, not mid-handshake.
        crypto_scalarmult(_PROBE, raw)
    except CryptoError:
        raise ValueError("e2e_pk is not a usable Curve25519 key (low order)") from None
    return raw


def fingerprint(public_key: bytes) -> str:
    """A short, readable digest of a server's long-term public key, for pinning (`gw1:xxxx-xxxx-…`)."""
    digest = blake2b(public_key, digest_size=16, person=b"gw-fingerprint", encoder=RawEncoder)
    hexed = digest.hex()
    return "gw1:" + "-".join(hexed[i : i + 4] for i in range(0, len(hexed), 4))


class BoxChannel:
    """The v1 channel: one NaCl Box both ways, random client nonces, base64 text frames.

    The v1 wire format cannot stop replay or reflection by construction, so this object remembers every
    nonce it accepted and refuses one seen before, and refuses any nonce carrying its own send prefix.
    """

    def __init__(self, own: PrivateKey, peer_public: bytes) -> None:
        self._box = Box(own, PublicKey(peer_public))
        self._prefix = os.urandom(_PREFIX_BYTES)
        self._sent = 0
        self._seen: set[bytes] = set()

    @property
    def seen_count(self) -> int:
        return len(self._seen)

    def seal(self, plaintext: bytes) -> str:
        """Encrypt one frame: base64(nonce ‖ ciphertext)."""
        nonce = self._prefix + struct.pack(">Q", self._sent)
        self._sent += 1
        return b64encode(bytes(self._box.encrypt(plaintext, nonce)))

    def open(self, frame: str) -> bytes:
        """Decrypt one frame; raise DecryptError when it is malformed, forged, replayed or reflected."""
        raw = b64decode(frame)
        if len(raw) < NONCE_BYTES + MAC_BYTES:
            raise DecryptError("frame too short")
        nonce = raw[:NONCE_BYTES]
        if nonce[:_PREFIX_BYTES] == self._prefix:
            raise DecryptError("reflected frame (the server's own nonce)")
        if nonce in self._seen:
            raise DecryptError("replayed frame (nonce already used)")
        try:
            plain = self._box.decrypt(raw[NONCE_BYTES:], nonce)
        except CryptoError as exc:
            raise DecryptError("cannot decrypt (wrong key or tampered frame)") from exc
        # Only authentic frames are remembered, so garbage cannot grow the set.
        self._seen.add(nonce)
        return bytes(plain)


class ClientBoxChannel:
    """The client's side of v1 (used by `gateway.ws.client` and the tests): random nonces, plain Box."""

    def __init__(self, own: PrivateKey, peer_public: bytes) -> None:
        self._box = Box(own, PublicKey(peer_public))

    def seal(self, plaintext: bytes) -> str:
        return b64encode(bytes(self._box.encrypt(plaintext)))

    def open(self, frame: str) -> bytes:
        raw = b64decode(frame)
        try:
            return bytes(self._box.decrypt(raw))
        except CryptoError as exc:
            raise DecryptError("cannot decrypt") from exc


# ---- v2: pinned server key, token never sent, one key per direction, counter nonces ----

V2_LABEL = b"gw-e2e-v2"


def _h(data: bytes, *, key: bytes = b"", person: bytes) -> bytes:
    return bytes(blake2b(data, digest_size=32, key=key, person=person, encoder=RawEncoder))


def _lp(data: bytes) -> bytes:
    """Length-prefix a transcript part so that no two different transcripts hash the same bytes."""
    return struct.pack(">I", len(data)) + data


def token_key(token: str) -> bytes:
    """The 32-byte key derived from the gateway token; only this, never the token, enters v2 proofs."""
    return _h(token.encode("utf-8", "surrogatepass"), person=b"gw-v2-token")


def transcript(hello: bytes, server_static: bytes, server_eph: bytes, server_nonce: bytes) -> bytes:
    """H: binds the client's whole hello frame (its ephemeral key, nonce and scope) and the server's answer."""
    return _h(_lp(V2_LABEL) + _lp(hello) + _lp(server_static) + _lp(server_eph) + _lp(server_nonce), person=b"gw-v2-th")


def server_proof(th: bytes, static_dh: bytes) -> bytes:
    """Proof that the server holds the secret of its pinned key: keyed by DH(server static, client eph)."""
    return _h(th, key=_h(static_dh, person=b"gw-v2-sdh"), person=b"gw-v2-server")


def client_proof(th: bytes, tkey: bytes) -> bytes:
    """Proof that the client knows the token: a keyed hash over the transcript (both ephemeral keys)."""
    return _h(th, key=tkey, person=b"gw-v2-client")


def proofs_match(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _derive(kx_key: bytes, static_dh: bytes, th: bytes, tkey: bytes, label: bytes) -> bytes:
    return _h(_lp(kx_key) + _lp(static_dh) + _lp(th), key=tkey, person=label)


class SessionKeys(msgspec.Struct, frozen=True):
    send: bytes
    receive: bytes


def server_session_keys(eph: PrivateKey, client_eph: bytes, static_dh: bytes, th: bytes, tkey: bytes) -> SessionKeys:
    """The server's (send, receive) keys: crypto_kx on the ephemerals, mixed with the static DH and token."""
    rx, tx = crypto_kx_server_session_keys(bytes(eph.public_key), bytes(eph), client_eph)
    return SessionKeys(
        send=_derive(tx, static_dh, th, tkey, b"gw-v2-s2c"), receive=_derive(rx, static_dh, th, tkey, b"gw-v2-c2s")
    )


def client_session_keys(eph: PrivateKey, server_eph: bytes, static_dh: bytes, th: bytes, tkey: bytes) -> SessionKeys:
    """The client's (send, receive) keys, mirror of `server_session_keys`."""
    rx, tx = crypto_kx_client_session_keys(bytes(eph.public_key), bytes(eph), server_eph)
    return SessionKeys(
        send=_derive(tx, static_dh, th, tkey, b"gw-v2-c2s"), receive=_derive(rx, static_dh, th, tkey, b"gw-v2-s2c")
    )


def static_dh(own_secret: bytes, peer_public: bytes) -> bytes:
    """Raw X25519 between a secret and a public key (the server's static key and the client's ephemeral)."""
    return bytes(crypto_scalarmult(own_secret, peer_public))


def _counter_nonce(n: int) -> bytes:
    return bytes(NONCE_BYTES - 8) + struct.pack(">Q", n)


class CounterChannel:
    """A v2 channel: SecretBox per direction, implicit counter nonces that must advance by exactly one.

    Frames carry only the ciphertext. A replayed, reordered, dropped-then-later or reflected frame fails to
    decrypt (wrong counter or wrong direction key), so nothing has to be remembered.
    """

    def __init__(self, keys: SessionKeys) -> None:
        self._tx = SecretBox(keys.send)
        self._rx = SecretBox(keys.receive)
        self._sent = 0
        self._received = 0

    def seal(self, plaintext: bytes) -> bytes:
        nonce = _counter_nonce(self._sent)
        self._sent += 1
        return bytes(self._tx.encrypt(plaintext, nonce).ciphertext)

    def open(self, frame: bytes) -> bytes:
        try:
            plain = self._rx.decrypt(frame, _counter_nonce(self._received))
        except CryptoError as exc:
            raise DecryptError("cannot decrypt (replayed, reordered, reflected or forged frame)") from exc
        self._received += 1
        return bytes(plain)
