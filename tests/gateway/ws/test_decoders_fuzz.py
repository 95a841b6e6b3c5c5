"""Property tests of the frame decoders: whatever arrives, each answers with its own error, never anything else."""

from __future__ import annotations

import os

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from gateway.connectors.slack import verify_signature
from gateway.errors import GatewayError
from gateway.ws import crypto
from gateway.ws.handshake import AuthError, Disconnected, Frame, V1Channel, V2Channel, handshake

TOKEN = "fuzz-token-0123456789abcdef"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
b64ish = st.one_of(st.text(max_size=60), st.binary(max_size=48).map(crypto.b64encode))
auth_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["auth", "auth_proof", "message", ""])},
    optional={
        "v": st.one_of(st.just(2), json_scalars),
        "token": st.one_of(st.just(TOKEN), json_values),
        "e2e_pk": st.one_of(b64ish, st.just(crypto.b64encode(bytes(PrivateKey.generate().public_key))), json_scalars),
        "nonce": st.one_of(b64ish, st.just(crypto.b64encode(os.urandom(32)))),
        "chat_id": json_values,
        "channel_id": json_values,
        "resume_from": json_values,
    },
).map(lambda d: msgspec.json.encode(d).decode())
any_frame = st.one_of(
    auth_frames,
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(lambda v: msgspec.json.encode(v).decode()),
)


class Script:
    """A transport that hands over the given frames, then reports the client gone."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self.sent: list[str] = []

    async def receive(self) -> Frame:
        if not self.frames:
            raise Disconnected()
        return self.frames.pop(0)

    async def send_text(self, text: str) -> None:
        self.sent.append(text)


@FUZZ
@given(first=any_frame, second=any_frame)
def test_the_auth_phase_answers_any_frames_with_auth_error_or_success(first: Frame, second: Frame) -> None:
    identity = PrivateKey.generate()
    script = Script([first, second])

    async def main() -> None:
        try:
            auth = await handshake(script, token=TOKEN, identity=identity, default_chat=1)
        except (AuthError, Disconnected):
            return
        # Only a frame with the right token (v1) can get here; the ids it carries are sane.
        assert auth.chat_id > 0 and (auth.channel_id is None or auth.channel_id > 0)
        assert auth.resume_from is None or auth.resume_from >= 0

    trio.run(main)
    for text in script.sent:  # the v2 challenge is the only frame sent in the auth phase
        assert msgspec.json.decode(text)["type"] == "auth_challenge"


@FUZZ
@given(frame=st.one_of(st.text(max_size=400), st.binary(max_size=400), st.binary(max_size=300).map(crypto.b64encode)))
def test_a_v1_channel_refuses_any_forged_frame_with_decrypt_failed(frame: Frame) -> None:
    server, client = PrivateKey.generate(), PrivateKey.generate()
    channel = V1Channel(crypto.BoxChannel(server, bytes(client.public_key)))
    with pytest.raises(crypto.DecryptError):
        channel.open_frame(frame)


def _v2_pair() -> tuple[V2Channel, crypto.CounterChannel]:
    s_eph, c_eph = PrivateKey.generate(), PrivateKey.generate()
    sdh, th, tkey = os.urandom(32), os.urandom(32), crypto.token_key(TOKEN)
    server = V2Channel(crypto.CounterChannel(crypto.server_session_keys(s_eph, bytes(c_eph.public_key), sdh, th, tkey)))
    client = crypto.CounterChannel(crypto.client_session_keys(c_eph, bytes(s_eph.public_key), sdh, th, tkey))
    return server, client


@FUZZ
@given(frame=st.one_of(st.binary(max_size=400), st.text(max_size=100)), plaintext=st.binary(max_size=100))
def test_a_v2_channel_refuses_forged_frames_and_still_opens_the_genuine_next_one(
    frame: Frame, plaintext: bytes
) -> None:
    server, client = _v2_pair()
    with pytest.raises(crypto.DecryptError):
        server.open_frame(frame)
    # A forgery does not advance the counter: the client's real frame still opens.
    assert server.open_frame(client.seal(plaintext)) == plaintext


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(["x-slack-request-timestamp", "x-slack-signature", "content-type"]),
        st.one_of(st.text(max_size=80), st.integers(0, 2**40).map(str)),
    ),
    body=st.binary(max_size=300),
)
def test_slack_signature_check_refuses_anything_unsigned_with_401(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(GatewayError) as err:
        verify_signature("fuzz-signing-secret", headers, body)
    assert err.value.status == 401
