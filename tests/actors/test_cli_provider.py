"""The `cli` provider on real processes: plain and JSON-lines output, failures, abort of a process tree."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import trio

from actors.messages import SessionKey
from actors.providers.base import (
    FinalText,
    ProviderError,
    ProviderEvent,
    SystemStatus,
    TextDelta,
    ToolActivity,
    TurnRequest,
    Usage,
)
from actors.providers.cli import CliProvider, CliTurn, group_members, parse_json_line

KEY = SessionKey("api", "1")


def request(prompt: str) -> TurnRequest:
    return TurnRequest(session_id="s", key=KEY, prompt=prompt)


def kill_group(turn: CliTurn) -> None:
    """The test's own clean-up (not the provider's abort, which some tests check): SIGKILL the turn's group."""
    if turn._proc is not None:
        try:
            os.killpg(turn._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def collect(provider: CliProvider, prompt: str) -> list[ProviderEvent]:
    with trio.fail_after(20):
        return [e async for e in provider.start_turn(request(prompt)).events()]


async def test_plain_output_streams_line_by_line_and_stdin_gets_the_prompt() -> None:
    p = CliProvider([sys.executable, "-c", "import sys; t = sys.stdin.read(); print(t.upper()); print('end', end='')"])
    events = await collect(p, "hi there")
    assert all(isinstance(e, TextDelta) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "HI THERE\nend"


async def test_partial_lines_stream_before_the_newline(tmp_path: Path) -> None:
    go = tmp_path / "go"
    # The child waits for the test to have seen the partial line (its own poll: the test itself never sleeps).
    code = (
        "import os, sys, time\n"
        "sys.stdout.write('thinking'); sys.stdout.flush()\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
        "print(' done')\n"
    )
    turn = CliProvider([sys.executable, "-c", code, str(go), "{prompt}"]).start_turn(request("x"))
    try:
        with trio.fail_after(20):
            events = turn.events()
            assert await events.__anext__() == TextDelta("thinking")
            go.touch()
            rest = [e async for e in events]
    finally:
        kill_group(turn)  # a failed test must not leave the child polling for `go`
    assert "".join(e.text for e in rest if isinstance(e, TextDelta)) == " done\n"


async def test_prompt_placeholder_env_and_workdir(tmp_path: Path) -> None:
    code = "import os, sys; print(sys.argv[1], os.environ['GW_X'], os.getcwd())"
    p = CliProvider([sys.executable, "-c", code, "<{prompt}>"], workdir=str(tmp_path), env={"GW_X": "y"})
    events = await collect(p, "p")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == f"<p> y {tmp_path}\n"


JSONL = r"""
import json
for obj in [
    {"type": "system", "subtype": "init"},
    {"type": "assistant", "message": {"content": [{"type": "text", "text": "Let me look."},
                                                  {"type": "tool_use", "name": "Read", "input": {}}]}},
    {"type": "item.started", "item": {"type": "command_execution", "name": "bash"}},
    {"type": "result", "result": "All done."},
]:
    print(json.dumps(obj), flush=True)
"""


async def test_json_lines_of_coding_agents_become_tool_activity() -> None:
    events = await collect(CliProvider([sys.executable, "-c", JSONL]), "x")
    assert events == [
        SystemStatus("init"),
        TextDelta("Let me look."),
        ToolActivity("Read"),
        ToolActivity("bash"),
        FinalText("All done."),
    ]
    assert parse_json_line({"type": "unknown"}) == []


async def test_a_failing_command_raises_with_its_stderr() -> None:
    p = CliProvider([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    with pytest.raises(ProviderError, match="status 3: boom"):
        await collect(p, "x")
    with pytest.raises(ProviderError, match="cannot run"):
        await collect(CliProvider(["/no/such/binary"]), "x")
    with pytest.raises(ProviderError, match="no command"):
        await collect(CliProvider([]), "x")


async def test_abort_kills_a_group_that_ignores_sigterm() -> None:
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    turn = CliProvider([sys.executable, "-c", code], grace=0.2).start_turn(request("x"))
    try:
        with trio.fail_after(20):
            events = turn.events()
            first = await events.__anext__()
            assert isinstance(first, TextDelta) and first.text.startswith("ready")
            assert turn._proc is not None
            pgid = turn._proc.pid
            assert len(group_members(pgid)) == 2
            assert await turn.abort() == 2
            assert group_members(pgid) == []
            await events.aclose()  # type: ignore[attr-defined]
    finally:
        kill_group(turn)  # were abort broken, its 300 s sleepers must still go


def _script(records: list[dict[str, object]]) -> list[str]:
    """A command that prints `records` as JSON lines, as a coding-agent CLI in its JSON mode does."""
    return [sys.executable, "-c", f"import json\nfor r in {records!r}:\n    print(json.dumps(r), flush=True)\n"]


async def test_claude_partial_messages_stream_once() -> None:
    def delta(text: str) -> dict[str, object]:
        return {
            "type": "stream_event",
            "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}},
        }

    tool_start = {"type": "content_block_start", "content_block": {"type": "tool_use", "name": "Grep"}}
    records: list[dict[str, object]] = [
        {"type": "system", "subtype": "init"},
        delta("Hel"),
        delta("lo"),
        {"type": "stream_event", "event": tool_start},
        # The full message repeats what streamed: it must not be shown twice.
        {
            "type": "assistant",
            "message": {"content": [{"type": "text", "text": "Hello"}, {"type": "tool_use", "name": "Grep"}]},
        },
        {"type": "result", "subtype": "success", "result": "Hello"},
    ]
    events = await collect(CliProvider(_script(records)), "x")
    assert events == [SystemStatus("init"), TextDelta("Hel"), TextDelta("lo"), ToolActivity("Grep"), FinalText("Hello")]


async def test_codex_exec_json_items() -> None:
    records: list[dict[str, object]] = [
        {"type": "thread.started", "thread_id": "t1"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "i0", "type": "reasoning", "text": "thinking it over"}},
        {"type": "item.started", "item": {"id": "i1", "type": "command_execution", "command": "ls"}},
        {"type": "item.completed", "item": {"id": "i1", "type": "command_execution", "command": "ls"}},
        {"type": "item.completed", "item": {"id": "i2", "type": "file_change"}},
        {"type": "item.started", "item": {"id": "i3", "type": "mcp_tool_call", "server": "s", "tool": "search"}},
        {"type": "item.completed", "item": {"id": "i4", "type": "agent_message", "text": "Listed the files."}},
        {"type": "turn.completed", "usage": {"input_tokens": 1}},
    ]
    events = await collect(CliProvider(_script(records)), "x")
    assert events == [
        ToolActivity("command_execution"),
        ToolActivity("file_change"),
        ToolActivity("search"),
        TextDelta("Listed the files."),
    ]


async def test_gemini_stream_json_skips_the_echoed_prompt() -> None:
    records: list[dict[str, object]] = [
        {"type": "init", "session_id": "s"},
        {"type": "message", "role": "user", "content": "the prompt"},
        {"type": "tool_use", "tool_name": "read_file", "tool_id": "1"},
        {"type": "message", "role": "assistant", "content": "Done", "delta": True},
        {"type": "result", "status": "success"},
    ]
    events = await collect(CliProvider(_script(records)), "x")
    assert events == [ToolActivity("read_file"), TextDelta("Done")]


async def test_the_gateways_own_settings_stay_out_of_the_agents_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PROVIDERS_OPENAI_API_KEY", "sk-canary-0123456789")
    monkeypatch.setenv("GATEWAY_SERVER_TOKEN", "canary-token-0123456789")
    code = "import os; print(sorted(k for k in os.environ if k.startswith(('GATEWAY_', 'GW_', 'PATH'))))"
    events = await collect(CliProvider([sys.executable, "-c", code], env={"GW_X": "y"}), "x")
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "['GW_X', 'PATH']\n"


async def test_usage_reported_by_claude_codex_and_gemini() -> None:
    claude_usage = {
        "input_tokens": 12,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 3000,
        "output_tokens": 40,
    }
    claude: list[dict[str, object]] = [
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Hi"}]}},
        {"type": "result", "subtype": "success", "result": "Hi", "usage": claude_usage, "total_cost_usd": 0.01},
    ]
    assert await collect(CliProvider(_script(claude)), "x") == [TextDelta("Hi"), FinalText("Hi"), Usage(3112, 40)]
    codex: list[dict[str, object]] = [
        {"type": "item.completed", "item": {"id": "i1", "type": "agent_message", "text": "Done."}},
        {"type": "turn.completed", "usage": {"input_tokens": 900, "cached_input_tokens": 800, "output_tokens": 25}},
    ]
    assert await collect(CliProvider(_script(codex)), "x") == [TextDelta("Done."), Usage(900, 25)]
    gemini: list[dict[str, object]] = [
        {"type": "message", "role": "assistant", "content": "Ok", "delta": True},
        {"type": "result", "status": "success", "stats": {"total_tokens": 70, "input_tokens": 60, "output_tokens": 10}},
    ]
    assert await collect(CliProvider(_script(gemini)), "x") == [TextDelta("Ok"), Usage(60, 10)]


def test_usage_that_is_not_a_count_is_left_out() -> None:
    for usage in ({"input_tokens": "12", "output_tokens": 3}, {"input_tokens": -1, "output_tokens": 3}, {}):
        assert parse_json_line({"type": "turn.completed", "usage": usage}) == []
    assert parse_json_line({"type": "result", "result": "r", "usage": {"input_tokens": True, "output_tokens": 1}}) == [
        FinalText("r")
    ]
