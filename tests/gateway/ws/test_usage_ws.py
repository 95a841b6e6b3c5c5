"""Usage on /ws: the turn's counts ride on its end (v1 `result`, v2 `turn_ended`), and a reached daily cap refuses
the next message with an encrypted error frame, the socket staying open and nothing stored."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.conftest import make_config, start_gateway
from tests.gateway.rest import admin_client
from tests.gateway.wshelpers import client, until


async def test_usage_on_the_turns_end_then_the_cap_refuses_the_next_message(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The gateway token's chats belong to no account: the cap for those applies. "alpha beta" is estimated at
    # 3 + 4 tokens in and 3 out, so one turn reaches a cap of 10.
    config, paths = make_config(tmp_path, usage={"unowned_daily_token_cap": 10})
    gw = await start_gateway(nursery, config, paths)
    try:
        with trio.fail_after(60):
            async with client(gw) as v1, client(gw, chat_id=2, v2=True) as v2:
                await v1.send_message("alpha beta")
                result = (await until(v1, "result"))[-1]
                assert result["text"] == "alpha beta"
                assert result["usage"] == {
                    "input_tokens": 7,
                    "output_tokens": 3,
                    "total_tokens": 10,
                    "estimated": True,
                    "model": "echo",
                }
                await v1.send_message("gamma")
                refused = (await until(v1, "error"))[-1]
                assert refused["code"] == "usage_cap_reached"
                assert "daily token cap is reached (10 of 10" in refused["message"]
                assert "not stored" in refused["message"]
                # The v2 client (same bucket: no account) is refused too; its socket stays usable. Its chat was
                # new and under the cap when it connected: the turn's usage written since makes its first turn
                # read the cap again, so it is refused before the provider starts (no turn shown at all).
                await v2.send_message("delta")
                frames = await until(v2, "error")
                assert frames[-1]["code"] == "usage_cap_reached"
                assert not [f for f in frames if f["type"] in ("turn_started", "text_delta")], frames
                await v2.abort()
                assert (await until(v2, "abort_ok"))[-1]["killed"] == 0
            async with admin_client(gw) as admin:
                usage = (await admin.get("/api/usage", params={"user": "none"})).json()
                assert usage["total"]["turns"] == 1
                assert usage["today"]["used"] == 10 and usage["today"]["cap"] == 10
                sessions = (await admin.get("/api/sessions")).json()["sessions"]
                assert all(s["latest_message"] not in ("gamma", "delta") for s in sessions)
    finally:
        await gw.stop()


async def test_v2_clients_see_usage_on_turn_ended(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    try:
        with trio.fail_after(60):
            async with client(gw, v2=True) as v2:
                await v2.send_message("one two three")
                ended = (await until(v2, "turn_ended"))[-1]
                assert ended["state"] == "completed"
                assert ended["usage"]["estimated"] is True and ended["usage"]["output_tokens"] == 4
    finally:
        await gw.stop()
