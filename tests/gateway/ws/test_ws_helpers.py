"""A `/ws` connection's helpers (its sender, an abort) run in the gateway's one nursery for them: clients that
abort, leave mid-stream or stay to the end leave no helper, no connection actor and no error behind."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from tests.conftest import make_config, start_gateway, until
from tests.gateway.wshelpers import client, deltas
from tests.gateway.wshelpers import until as until_frame

WORDS = " ".join(f"w{i}" for i in range(300))


async def test_helpers_end_with_their_connections_however_the_client_leaves(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 300 words at 2 ms each: every turn still streams when its client acts.
    config, paths = make_config(tmp_path, providers={"echo": {"delay_ms": 2.0}})
    gw = await start_gateway(nursery, config, paths)
    rt = gw.runtime
    tasks = rt.ws_tasks
    assert tasks is not None
    finished: list[str] = []

    async def one(i: int) -> None:
        async with client(gw, chat_id=900 + i) as c:
            await c.send_message(WORDS)
            await until_frame(c, "text_delta")
            if i % 3 == 0:
                await c.abort()
                frames = await until_frame(c, "abort_ok")
                assert frames[-1]["killed"] == 0
            elif i % 3 == 1:
                return  # leaves mid-stream: the socket closes under the sender
            else:
                assert deltas(await until_frame(c, "result")) != ""
            finished.append("x")

    with caplog.at_level(logging.WARNING, logger="gateway.ws"), trio.fail_after(60):
        async with trio.open_nursery() as clients:
            for i in range(30):
                clients.start_soon(one, i)
        await until(lambda: not tasks.child_tasks and rt.registry.count("connection:") == 0 and not rt.connections)
    assert len(finished) == 20
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    await gw.stop()
