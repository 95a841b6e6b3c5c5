"""Shared fixtures: a config in a temporary folder and a real gateway on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from gateway.config.file import Config, Paths, parse_config, paths_for
from gateway.core import Runtime
from gateway.runtime import run

TOKEN = "test-token-0123456789abcdef"


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> tuple[Config, Paths]:
    """A config whose data lives under `tmp_path`, listening on a free loopback port."""
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "token": TOKEN, "graceful_timeout": 2.0},
        "storage": {"data_dir": str(tmp_path / "data")},
        # Pings off unless a test wants them (ws/test_ws.py does): they would only add traffic to every test.
        "ws": {"ping_interval": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    config = parse_config(data)
    return config, paths_for(config, tmp_path / "config.toml")


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., tuple[Config, Paths]]:
    def factory(**sections: dict[str, Any]) -> tuple[Config, Paths]:
        return make_config(tmp_path, **sections)

    return factory


class RunningGateway:
    """A gateway started in the test's nursery; `stop()` triggers the graceful shutdown and waits for it."""

    def __init__(self, runtime: Runtime, done: trio.Event) -> None:
        self.runtime = runtime
        self._done = done

    @property
    def base_url(self) -> str:
        return self.runtime.binds[0]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://")

    @property
    def token(self) -> str:
        return self.runtime.token

    async def stop(self) -> None:
        self.runtime.shutdown.set()
        await self._done.wait()


async def start_gateway(nursery: trio.Nursery, config: Config, paths: Paths) -> RunningGateway:
    done = trio.Event()

    async def runner(task_status: trio.TaskStatus[Runtime]) -> None:
        try:
            await run(config, paths, token=config.server.token or TOKEN, task_status=task_status)
        finally:
            done.set()

    runtime: Runtime = await nursery.start(runner)
    return RunningGateway(runtime, done)


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    yield gw
    with trio.fail_after(10):
        await gw.stop()


async def until(predicate: Callable[[], object], *, interval: float = 0.01) -> None:
    """Poll a synchronous `predicate` until it holds; bound the wait with `trio.fail_after` around it."""
    while True:
        if predicate():
            return
        await trio.sleep(interval)


def to_dict(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


@pytest.fixture
async def store(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Any]:
    """A real storage actor over a migrated SQLite file in `tmp_path`."""
    from functools import partial

    from actors.store import Store, StoreActor
    from actors.supervisor import ChildSpec, supervise
    from storage.db import open_db

    conn = open_db(tmp_path / "store.db", synchronous="normal")
    actor = StoreActor(conn)
    spec: ChildSpec[Any] = ChildSpec("store", actor.run, capacity=1024)
    yield Store(await nursery.start(partial(supervise, spec)))
