"""The `openai` client library, pointed at the gateway, chats and streams through `/v1/chat/completions`."""

from __future__ import annotations

from pathlib import Path

import openai
import trio

from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.rest import admin_client


def _client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=TOKEN, max_retries=0, timeout=20)


async def test_openai_client_streams_and_completes(gateway: RunningGateway) -> None:
    def talk() -> tuple[list[str], str, str | None]:
        client = _client(gateway)
        stream = client.chat.completions.create(
            model="gateway",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello from openai"}],
            stream=True,
            user="work",
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        done = client.chat.completions.create(
            model="gateway", messages=[{"role": "user", "content": "second turn"}], user="work"
        )
        return pieces, done.choices[0].message.content or "", done.choices[0].finish_reason

    with trio.fail_after(60):
        pieces, reply, finish = await trio.to_thread.run_sync(talk)
    assert "".join(pieces) == "hello from openai"
    assert len([p for p in pieces if p]) == 3, "the reply streams word by word"
    assert reply == "second turn" and finish == "stop"
    async with admin_client(gateway) as client:
        sessions = (await client.get("/api/sessions")).json()["sessions"]
    work = [s for s in sessions if s["key"] == "openai:admin.work"]
    assert len(work) == 1 and work[0]["latest_message"] == "second turn"


async def test_openai_errors_are_openai_shaped(gateway: RunningGateway) -> None:
    def bad_calls() -> list[int]:
        statuses: list[int] = []
        client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="wrong-key", max_retries=0, timeout=20)
        try:
            client.chat.completions.create(model="gateway", messages=[{"role": "user", "content": "x"}])
        except openai.AuthenticationError as exc:
            statuses.append(exc.status_code)
        try:
            _client(gateway).chat.completions.create(model="gateway", messages=[{"role": "assistant", "content": "x"}])
        except openai.UnprocessableEntityError as exc:
            statuses.append(exc.status_code)
        return statuses

    with trio.fail_after(60):
        assert await trio.to_thread.run_sync(bad_calls) == [401, 422]


async def test_the_session_can_come_from_the_x_session_id_header(gateway: RunningGateway) -> None:
    def talk() -> tuple[str, int]:
        client = openai.OpenAI(
            base_url=f"{gateway.base_url}/v1",
            api_key=TOKEN,
            max_retries=0,
            timeout=20,
            default_headers={"X-Session-Id": "from-header"},
        )
        done = client.chat.completions.create(model="gateway", messages=[{"role": "user", "content": "via header"}])
        bad = openai.OpenAI(
            base_url=f"{gateway.base_url}/v1",
            api_key=TOKEN,
            max_retries=0,
            timeout=20,
            default_headers={"X-Session-Id": "no spaces allowed"},
        )
        try:
            bad.chat.completions.create(model="gateway", messages=[{"role": "user", "content": "x"}])
        except openai.UnprocessableEntityError as exc:
            return done.choices[0].message.content or "", exc.status_code
        return done.choices[0].message.content or "", 200

    with trio.fail_after(60):
        reply, bad_status = await trio.to_thread.run_sync(talk)
    assert reply == "via header" and bad_status == 422
    async with admin_client(gateway) as client:
        sessions = (await client.get("/api/sessions")).json()["sessions"]
    assert [s["latest_message"] for s in sessions if s["key"] == "openai:admin.from-header"] == ["via header"]


async def test_a_stream_ends_with_a_usage_chunk_when_asked(nursery: trio.Nursery, tmp_path: Path) -> None:
    """`stream_options.include_usage`: one last chunk with `choices: []` and the provider's counts, as OpenAI sends."""
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    config, paths = make_config(
        tmp_path, providers={"openai": {"base_url": base, "model": "fake-gpt"}}, agent={"provider": "openai"}
    )
    gw = await start_gateway(nursery, config, paths)
    fake.scripts.append(Script(texts=["Hel", "lo"], usage=(21, 5)))
    fake.scripts.append(Script(texts=["plain"], usage=(3, 1)))

    def talk() -> tuple[list[openai.types.chat.ChatCompletionChunk], list[openai.types.chat.ChatCompletionChunk]]:
        client = _client(gw)
        messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
        asked = client.chat.completions.create(
            model="m", messages=messages, stream=True, stream_options={"include_usage": True}, user="u"
        )
        plain = client.chat.completions.create(model="m", messages=messages, stream=True, user="u")
        return list(asked), list(plain)

    try:
        with trio.fail_after(60):
            asked, plain = await trio.to_thread.run_sync(talk)
    finally:
        await gw.stop()
    assert "".join(c.choices[0].delta.content or "" for c in asked if c.choices) == "Hello"
    last = asked[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (21, 5, 26)
    assert all(c.usage is None for c in asked[:-1]), "only the last chunk carries usage"
    assert all("usage" in c.model_fields_set for c in asked), "null on the others, as OpenAI sends it"
    assert asked[-2].choices[0].finish_reason == "stop" and last.id == asked[0].id
    assert all(c.choices and "usage" not in c.model_fields_set for c in plain), "no usage unless asked for"
