"""gateway.ws.crypto without sockets: v1 Box round-trips, replay/reflection refusal, the v2 key schedule."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PrivateKey

from gateway.ws import crypto

SERVER = PrivateKey.generate()
CLIENT = PrivateKey.generate()


def v1_pair() -> tuple[crypto.BoxChannel, crypto.ClientBoxChannel]:
    server = crypto.BoxChannel(SERVER, bytes(CLIENT.public_key))
    return server, crypto.ClientBoxChannel(CLIENT, bytes(SERVER.public_key))


@given(st.binary(max_size=4096))
def test_v1_round_trips_both_ways(data: bytes) -> None:
    server, client = v1_pair()
    assert server.open(client.seal(data)) == data
    assert client.open(server.seal(data)) == data


@given(st.binary(max_size=256))
def test_v1_refuses_replay_and_reflection(data: bytes) -> None:
    server, client = v1_pair()
    frame = client.seal(data)
    server.open(frame)
    with pytest.raises(crypto.DecryptError, match="replayed"):
        server.open(frame)
    with pytest.raises(crypto.DecryptError, match="reflected"):
        server.open(server.seal(data))


@given(st.text(max_size=100))
def test_v1_garbage_is_a_decrypt_error(text: str) -> None:
    server, _ = v1_pair()
    with pytest.raises(crypto.DecryptError):
        server.open(text)


def test_parse_public_key() -> None:
    good = crypto.b64encode(bytes(CLIENT.public_key))
    assert crypto.parse_public_key(good) == bytes(CLIENT.public_key)
    low_order = crypto.b64encode(bytes([1] + [0] * 31))
    for bad in (None, 5, "", "AAAA", "!!", crypto.b64encode(bytes(32)), low_order, "A" * 100):
        with pytest.raises(ValueError):
            crypto.parse_public_key(bad)


def v2_pair(token_c: str = "t" * 20, token_s: str = "t" * 20) -> tuple[crypto.CounterChannel, crypto.CounterChannel]:
    static = PrivateKey.generate()
    c_eph, s_eph = PrivateKey.generate(), PrivateKey.generate()
    th = crypto.transcript(b"hello", bytes(static.public_key), bytes(s_eph.public_key), os.urandom(32))
    s_dh = crypto.static_dh(bytes(static), bytes(c_eph.public_key))
    c_dh = crypto.static_dh(bytes(c_eph), bytes(static.public_key))
    assert s_dh == c_dh
    assert crypto.server_proof(th, s_dh) == crypto.server_proof(th, c_dh)
    s_keys = crypto.server_session_keys(s_eph, bytes(c_eph.public_key), s_dh, th, crypto.token_key(token_s))
    c_keys = crypto.client_session_keys(c_eph, bytes(s_eph.public_key), c_dh, th, crypto.token_key(token_c))
    assert s_keys.send != s_keys.receive
    return crypto.CounterChannel(s_keys), crypto.CounterChannel(c_keys)


@given(st.lists(st.binary(max_size=512), min_size=1, max_size=8))
def test_v2_round_trips_in_order(messages: list[bytes]) -> None:
    server, client = v2_pair()
    for m in messages:
        assert server.open(client.seal(m)) == m
        assert client.open(server.seal(m)) == m


def test_v2_rejects_replay_reorder_and_reflection_by_construction() -> None:
    server, client = v2_pair()
    f0, f1 = client.seal(b"a"), client.seal(b"b")
    with pytest.raises(crypto.DecryptError):
        server.open(f1)  # reordered
    assert server.open(f0) == b"a"
    with pytest.raises(crypto.DecryptError):
        server.open(f0)  # replayed
    s0 = server.seal(b"mine")
    with pytest.raises(crypto.DecryptError):
        server.open(s0)  # reflected: the other direction's key


def test_v2_a_wrong_token_gives_keys_that_do_not_match() -> None:
    server, client = v2_pair(token_c="a" * 20, token_s="b" * 20)
    with pytest.raises(crypto.DecryptError):
        server.open(client.seal(b"x"))


def test_fingerprint_is_stable_and_readable() -> None:
    pk = bytes(SERVER.public_key)
    fp = crypto.fingerprint(pk)
    assert fp == crypto.fingerprint(pk) and fp.startswith("gw1:") and len(fp) == 4 + 32 + 7
    assert fp != crypto.fingerprint(bytes(CLIENT.public_key))
