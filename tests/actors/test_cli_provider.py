"""The `cli` provider on real processes: plain and JSON-lines output, failures, abort of a process tree."""

from __future__ import annotations

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
)
from actors.providers.cli import CliProvider, group_members, parse_json_line

KEY = SessionKey("api", "1")


def request(prompt: str) -> TurnRequest:
    return TurnRequest(session_id="s", key=KEY, prompt=prompt)


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
    with trio.fail_after(20):
        events = turn.events()
        assert await events.__anext__() == TextDelta("thinking")
        go.touch()
        rest = [e async for e in events]
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
