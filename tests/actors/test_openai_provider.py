"""The `openai` provider against a loopback server speaking OpenAI's streaming format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from actors.messages import SessionKey
from actors.providers.base import (
    HistoryMessage,
    ProviderError,
    SystemStatus,
    TextDelta,
    ToolActivity,
    TurnRequest,
    Usage,
)
from actors.providers.openai import OpenAIProvider, OpenAISettings, build_messages
from tests.actors.harness import harness, until_turn_ends
from tests.fakes.openai_server import FakeOpenAI, Script

KEY = SessionKey("api", "1")


def settings(base_url: str, **kw: Any) -> OpenAISettings:
    defaults: dict[str, Any] = {"base_url": base_url, "api_key": "sk-canary-123456", "model": "m1", "backoff": 0.01}
    defaults.update(kw)
    return OpenAISettings(**defaults)


def request(prompt: str, history: list[HistoryMessage] | None = None) -> TurnRequest:
    return TurnRequest(session_id="s", key=KEY, prompt=prompt, history=history or [])


async def collect(provider: OpenAIProvider, req: TurnRequest) -> list[object]:
    return [e async for e in provider.start_turn(req).events()]


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeOpenAI:
    server = FakeOpenAI()
    await server.start(nursery)
    return server


async def test_streams_text_with_history_model_and_key(fake: FakeOpenAI) -> None:
    fake.scripts.append(Script(texts=["Hel", "lo", " there"]))
    provider = OpenAIProvider(settings(fake.base_url, system_prompt="be brief"))
    history = [HistoryMessage("user", "earlier"), HistoryMessage("assistant", "reply")]
    with trio.fail_after(10):
        events = await collect(provider, request("hi", history))
    assert events == [TextDelta("Hel"), TextDelta("lo"), TextDelta(" there")]
    sent = fake.requests[0]
    assert sent["model"] == "m1" and sent["stream"] is True
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "hi"},
    ]
    assert fake.headers[0]["authorization"] == "Bearer sk-canary-123456"


async def test_retries_a_503_then_streams(fake: FakeOpenAI) -> None:
    fake.scripts.extend([Script(status=503, error="overloaded", retry_after="0"), Script(texts=["fine"])])
    with trio.fail_after(10):
        events = await collect(OpenAIProvider(settings(fake.base_url)), request("x"))
    assert events == [TextDelta("fine")]
    assert len(fake.requests) == 2


async def test_a_401_fails_at_once_with_the_endpoint_message(fake: FakeOpenAI) -> None:
    fake.scripts.append(Script(status=401, error="Incorrect API key provided"))
    with trio.fail_after(10), pytest.raises(ProviderError, match="HTTP 401: Incorrect API key"):
        await collect(OpenAIProvider(settings(fake.base_url)), request("x"))
    assert len(fake.requests) == 1


async def test_retries_give_up_after_max_retries(fake: FakeOpenAI) -> None:
    fake.scripts.extend([Script(status=500, error="boom")] * 3)
    with trio.fail_after(10), pytest.raises(ProviderError, match="HTTP 500"):
        await collect(OpenAIProvider(settings(fake.base_url, max_retries=2)), request("x"))
    assert len(fake.requests) == 3


async def test_retry_waits_are_capped_each_and_in_total(fake: FakeOpenAI) -> None:
    """Issue 13: with max_retries=20 the doubling backoff alone (0.5 s * 2**19) could hold a session for days."""
    fake.scripts.extend([Script(status=503, error="overloaded")] * 21)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)  # recorded, not slept: the caps are what is checked

    provider = OpenAIProvider(settings(fake.base_url, max_retries=20, backoff=0.5), sleep=sleep)
    with trio.fail_after(10), pytest.raises(ProviderError, match="HTTP 503"):
        await collect(provider, request("x"))
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(waits) == 30.0 and sum(waits) <= 300.0
    assert len(fake.requests) == len(waits) + 1 < 21  # the total ran out before the count did
    # A Retry-After asking for an hour is capped the same way.
    fake.scripts.clear()
    fake.scripts.extend([Script(status=429, error="slow down", retry_after="3600"), Script(texts=["ok"])])
    waits.clear()
    assert await collect(provider, request("y")) == [TextDelta("ok")]
    assert waits == [30.0]


async def test_a_stream_cut_in_the_middle_fails_the_turn_after_the_partial_text(fake: FakeOpenAI) -> None:
    fake.scripts.append(Script(texts=["partial ", "answer"], cut=True))
    got: list[object] = []
    with trio.fail_after(10), pytest.raises(ProviderError, match="ended in the middle"):
        async for e in OpenAIProvider(settings(fake.base_url)).start_turn(request("x")).events():
            got.append(e)
    assert got == [TextDelta("partial "), TextDelta("answer")]
    assert len(fake.requests) == 1, "text was already shown: a retry would repeat it"


async def test_an_unreachable_endpoint_fails_clearly() -> None:
    with trio.fail_after(10), pytest.raises(ProviderError, match="failed: ConnectError"):
        await collect(OpenAIProvider(settings("http://127.0.0.1:9/v1", max_retries=1)), request("x"))


class Calculator:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def specs(self) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        self.calls.append((name, arguments))
        return str(arguments["a"] + arguments["b"])


async def test_tool_calls_run_and_their_results_go_back_to_the_model(fake: FakeOpenAI) -> None:
    fake.scripts.extend(
        [
            Script(texts=["Let me add. "], tool_calls=[("call_1", "add", ['{"a": 2,', ' "b": 3}'])]),
            Script(texts=["It is 5."]),
        ]
    )
    tools = Calculator()
    with trio.fail_after(10):
        events = await collect(OpenAIProvider(settings(fake.base_url), tools=tools), request("2+3?"))
    assert events == [TextDelta("Let me add. "), ToolActivity("add"), TextDelta("It is 5.")]
    assert tools.calls == [("add", {"a": 2, "b": 3})]
    assert fake.requests[0]["tools"][0]["function"]["name"] == "add"
    follow_up = fake.requests[1]["messages"]
    assert follow_up[-2]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert follow_up[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}


async def test_tool_rounds_are_bounded_by_max_iterations(fake: FakeOpenAI) -> None:
    fake.scripts.extend([Script(tool_calls=[(f"c{i}", "add", ['{"a":1,"b":1}'])]) for i in range(3)])
    with trio.fail_after(10):
        events = await collect(
            OpenAIProvider(settings(fake.base_url, max_iterations=2), tools=Calculator()), request("loop")
        )
    assert events[-1] == SystemStatus("stopped after 2 tool rounds (agent.max_iterations)")
    assert len(fake.requests) == 2


async def test_a_tool_call_without_tools_is_reported(fake: FakeOpenAI) -> None:
    fake.scripts.append(Script(tool_calls=[("c", "search", ["{}"])]))
    with trio.fail_after(10):
        events = await collect(OpenAIProvider(settings(fake.base_url)), request("x"))
    assert events[0] == ToolActivity("search")
    assert isinstance(events[1], SystemStatus) and "no tools are configured" in str(events[1].text)


def test_history_is_trimmed_to_the_newest_that_fits() -> None:
    history = [HistoryMessage("user", f"{i:03d}" + "x" * 396) for i in range(50)]  # ~104 tokens each
    msgs = build_messages(OpenAISettings(context_tokens=1000), history, "now")
    assert msgs[-1] == {"role": "user", "content": "now"}
    kept = [m["content"][:3] for m in msgs[:-1]]
    assert kept == [f"{i:03d}" for i in range(41, 50)]  # the newest nine fit in 1000 tokens


async def test_abort_mid_stream_closes_the_http_stream(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.scripts.append(Script(texts=[f"w{i} " for i in range(500)], pause=0.02))
    provider = OpenAIProvider(settings(fake.base_url))
    async with harness(tmp_path, lambda: provider, inline=False) as h:
        _, live, _ = await h.subscribe(KEY)
        await h.submit(KEY, "long please")
        async for e in live:
            if e.type == "text_delta":
                break
        with trio.fail_after(10):
            assert await h.abort(KEY) == 0
        rest = await until_turn_ends(live)
        assert rest[-1].data["state"] == "aborted"
        with trio.fail_after(5):
            await fake.disconnected.wait()  # the server saw the client go away


async def test_usage_comes_from_the_streams_last_chunk_summed_over_tool_rounds(fake: FakeOpenAI) -> None:
    class Tools:
        def specs(self) -> list[dict[str, Any]]:
            return [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]

        async def call(self, name: str, arguments: dict[str, Any]) -> str:
            return "noon"

    fake.scripts.extend(
        [
            Script(tool_calls=[("c1", "now", ["{}"])], usage=(30, 7)),
            Script(texts=["It is ", "noon"], usage=(45, 4)),
        ]
    )
    with trio.fail_after(10):
        events = await collect(OpenAIProvider(settings(fake.base_url), tools=Tools()), request("time?"))
    assert [e for e in events if isinstance(e, Usage)] == [Usage(30, 7), Usage(45, 4)]
    assert all(r["stream_options"] == {"include_usage": True} for r in fake.requests)


async def test_usage_not_asked_for_when_switched_off(fake: FakeOpenAI) -> None:
    fake.scripts.append(Script(texts=["hi"], usage=(3, 1)))
    with trio.fail_after(10):
        events = await collect(OpenAIProvider(settings(fake.base_url, stream_usage=False)), request("x"))
    assert events == [TextDelta("hi")]  # no usage: the session estimates it
    assert "stream_options" not in fake.requests[0]


async def test_a_whole_json_answer_is_taken_with_its_usage(fake: FakeOpenAI) -> None:
    fake.scripts.append(Script(texts=["all ", "at once"], usage=(12, 3), whole=True))
    with trio.fail_after(10):
        events = await collect(OpenAIProvider(settings(fake.base_url)), request("x"))
    assert events == [TextDelta("all at once"), Usage(12, 3)]
