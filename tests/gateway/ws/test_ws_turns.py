"""`/ws` turns over real sockets: abort mid-stream (real process trees), scoping, disconnects, resume."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.wshelpers import client, deltas, merged, until

AGENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
os.replace(tmp, sys.argv[1])
prompt = sys.stdin.read()
for i in range(100000):
    print(f"{prompt}-{i}", flush=True)
    time.sleep(0.02)
"""


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def echo_config(tmp_path: Path, delay_ms: float = 30) -> Any:
    return make_config(tmp_path, providers={"echo": {"delay_ms": delay_ms}})


async def turn_states(gw: RunningGateway) -> list[str]:
    def q(conn: Any) -> list[str]:
        return [r[0] for r in conn.execute("SELECT state FROM turns ORDER BY id")]

    return await gw.runtime.store.call(q)


async def test_abort_mid_stream_kills_the_cli_process_tree(nursery: trio.Nursery, tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    pidfile = tmp_path / "pids"
    config, paths = make_config(
        tmp_path,
        agent={"provider": "cli"},
        providers={"cli": {"argv": [sys.executable, str(script), str(pidfile)], "grace": 2.0}},
    )
    gw = await start_gateway(nursery, config, paths)
    try:
        await _abort_kills_the_tree(gw, pidfile)
    finally:
        # The test's own clean-up, were the abort under test broken: the agent and its 300 s grandchild.
        for pid in map(int, pidfile.read_text().split()) if pidfile.exists() else ():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def _abort_kills_the_tree(gw: RunningGateway, pidfile: Path) -> None:
    with trio.fail_after(30):
        async with client(gw) as c:
            assert c.auth_ok["active_provider"] == "cli"
            await c.send_message("tick")
            for _ in range(3):
                await until(c, "text_delta")
            parent, grandchild = map(int, (await trio.Path(pidfile).read_text()).split())
            assert alive(parent) and alive(grandchild)
            await c.abort()
            frames = await until(c, "abort_ok")
            assert frames[-1] == {"type": "abort_ok", "killed": 2}
            # abort_ok comes after the group is gone: no waiting needed here.
            assert not alive(parent) and not alive(grandchild)
            # The turn's end (v1: system_status "aborted") and abort_ok travel on two tasks: either may be first.
            if not any(f["type"] == "system_status" for f in frames):
                frames += await until(c, "system_status")
            assert frames[-1]["type"] in ("system_status", "abort_ok")
            assert [f["data"] for f in frames if f["type"] == "system_status"] == ["aborted"]
            # The stream is over and the connection still works: the very next frame answers the next abort.
            await c.send({"type": "abort"})
            assert await c.receive() == {"type": "abort_ok", "killed": 0}
        assert await turn_states(gw) == ["aborted"]
        await gw.stop()


async def test_stop_message_is_an_abort(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = echo_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with client(gw) as c:
            await c.send_message(" ".join(["w"] * 500))
            await until(c, "text_delta")
            await c.send_message("/STOP")
            frames = await until(c, "abort_ok")
            assert "result" not in [f["type"] for f in frames]
        assert await turn_states(gw) == ["aborted"]
        await gw.stop()


async def test_abort_on_channel_a_leaves_channel_b_running(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = echo_config(tmp_path, delay_ms=20)
    gw = await start_gateway(nursery, config, paths)
    text = " ".join(f"w{i}" for i in range(60))
    with trio.fail_after(40):
        async with client(gw, chat_id=3, channel_id=1) as a, client(gw, chat_id=3, channel_id=2) as b:
            await a.send_message(text)
            await b.send_message(text)
            await until(a, "text_delta")
            await until(b, "text_delta")
            await a.abort()
            await until(a, "abort_ok")
            frames = await until(b, "result")
            assert frames[-1]["text"] == text
        assert sorted(await turn_states(gw)) == ["aborted", "completed"]
        await gw.stop()


async def test_a_client_that_disconnects_mid_stream_aborts_its_turn(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = echo_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with client(gw, chat_id=4) as watcher:
            async with client(gw, chat_id=4) as leaver:
                await leaver.send_message(" ".join(["w"] * 500))
                await until(leaver, "text_delta")
            frames = await until(watcher, "system_status")
            assert frames[-1]["data"] == "aborted"
        assert await turn_states(gw) == ["aborted"]
        await gw.stop()


async def test_a_client_that_disconnects_aborts_only_its_own_turns(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = echo_config(tmp_path, delay_ms=10)
    gw = await start_gateway(nursery, config, paths)
    text = " ".join(f"w{i}" for i in range(40))
    with trio.fail_after(30):
        async with client(gw, chat_id=6) as stayer:
            await stayer.send_message(text)
            await until(stayer, "text_delta")
            async with client(gw, chat_id=6) as leaver:
                await leaver.send_message("queued behind the stayer's turn")
                await until(leaver, "text_delta")  # the stayer's stream: the leaver's turn is still queued
            # The leaver's queued turn goes; the stayer's running turn streams on to its end.
            frames = await until(stayer, "result")
            assert frames[-1]["text"] == text
            assert "aborted" not in [f.get("data") for f in frames if f["type"] == "system_status"]
        assert sorted(await turn_states(gw)) == ["aborted", "completed"]
        await gw.stop()


async def _turn(gw: RunningGateway, text: str, **kw: Any) -> list[dict[str, Any]]:
    async with client(gw, **kw) as c:
        await c.send_message(text)
        return await until(c, "result")


async def test_resume_after_disconnect_replays_exactly_the_missed_events(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = echo_config(tmp_path, delay_ms=0)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        first = await _turn(gw, "one two", chat_id=8)
        seen = first[-1]["seq"]
        missed = await _turn(gw, "three four five", chat_id=8)
        async with client(gw, chat_id=8, resume_from=seen) as c:
            replayed = await until(c, "result")
            assert merged(replayed) == merged(missed)
            # And live events follow the replay on the same connection.
            await c.send_message("six")
            live = await until(c, "result")
            assert deltas(live) == "six" and live[0]["seq"] > missed[-1]["seq"]
        await gw.stop()


async def test_resume_mid_turn_continues_live_with_no_gap_or_repeat(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = echo_config(tmp_path, delay_ms=5)
    gw = await start_gateway(nursery, config, paths)
    text = " ".join(f"w{i}" for i in range(150))
    with trio.fail_after(30):
        async with client(gw, chat_id=12) as owner:  # its turn; it stays connected, so the turn goes on
            await owner.send_message(text)
            async with client(gw, chat_id=12) as reader:
                before = [await reader.receive() for _ in range(5)]
            # The reader was away while deltas kept coming; it comes back asking for what it missed.
            async with client(gw, chat_id=12, resume_from=before[-1]["seq"]) as again:
                after = await until(again, "result")
            everything = await until(owner, "result")
    # Exactly the owner's stream from the reader's first delta to the end: nothing missed, nothing twice (frame
    # boundaries may differ: the server joins the deltas waiting for a connection).
    seen = before + after
    seqs = [f["seq"] for f in seen]
    assert seqs == sorted(set(seqs)), "no frame twice, in order"
    assert all(f["type"] == "text_delta" for f in before), before
    assert deltas(everything).endswith(deltas(seen)) and deltas(seen).startswith(before[0]["data"])
    assert merged(after)[-1] == merged(everything)[-1] and merged(after)[-2]["seq"] == merged(everything)[-2]["seq"]
    assert len(after) > 1 and after[-1]["text"] == text
    await gw.stop()


async def test_resume_after_a_gateway_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = echo_config(tmp_path, delay_ms=0)
    with trio.fail_after(40):
        gw = await start_gateway(nursery, config, paths)
        seen = (await _turn(gw, "before", chat_id=9))[-1]["seq"]
        missed = await _turn(gw, "missed while away", chat_id=9)
        await gw.stop()
        gw2 = await start_gateway(nursery, config, paths)
        async with client(gw2, chat_id=9, resume_from=seen) as c:
            assert c.auth_ok["last_seq"] == missed[-1]["seq"] + 1  # + the turn_ended v1 clients do not get
            assert merged(await until(c, "result")) == merged(missed)
        async with client(gw2, chat_id=9, resume_from=0) as c:
            everything = await until(c, "result")
            assert deltas(everything) == "before"
        await gw2.stop()


async def test_resume_from_beyond_the_end_is_live_only(gateway: RunningGateway) -> None:
    with trio.fail_after(20):
        async with client(gateway, resume_from=10**9) as c:
            await c.send_message("fresh")
            frames = await until(c, "result")
            assert deltas(frames) == "fresh"


TOOLS = r"""
import json, sys
if sys.stdin.read() == "fail":
    sys.exit("the agent broke")
print(json.dumps({"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash"}]}}))
print(json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "see <file:/w/a.pdf>"}]}}))
"""


async def test_cli_tool_use_and_failure_over_ws(nursery: trio.Nursery, tmp_path: Path) -> None:
    script = tmp_path / "tools.py"
    script.write_text(TOOLS)
    config, paths = make_config(
        tmp_path, agent={"provider": "cli"}, providers={"cli": {"argv": [sys.executable, str(script)]}}
    )
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with client(gw) as c:
            await c.send_message("go")
            frames = await until(c, "result")
            assert [(f["type"], f.get("data")) for f in frames[:2]] == [
                ("tool_activity", "Bash"),
                ("text_delta", "see <file:/w/a.pdf>"),
            ]
            assert frames[-1]["files"] == [{"path": "/w/a.pdf", "name": "a.pdf", "is_image": False}]
            await c.send_message("fail")
            err = (await until(c, "error"))[-1]
            assert err["code"] == "internal_error" and "the agent broke" in err["message"]
        await gw.stop()


async def test_the_cli_provider_runs_in_the_workspace_by_default(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(
        tmp_path,
        agent={"provider": "cli"},
        providers={"cli": {"argv": [sys.executable, "-c", "import os; print(os.getcwd())"]}},
    )
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with client(gw) as c:
            await c.send_message("where")
            assert (await until(c, "result"))[-1]["text"] == f"{paths.workspace}\n"
        await gw.stop()
