"""Shared fixtures: a config in a temporary folder and a real gateway on 127.0.0.1:0."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlite_utils  # noqa: F401  # see below
import trio
from xdist.scheduler import LoadScopeScheduling

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


# Modules whose tests run on one pytest-xdist worker, one after the other (scripts/test spreads the rest test by
# test). pytest-xdist's own `xdist_group` mark cannot say it under pytest 9 (the node id it appends to is gone).
ONE_WORKER = {
    "tests/gateway/test_bad_input.py": "its tests share one gateway process, a module fixture",
    "tests/gateway/test_disk_faults.py": "loop devices, mounts and fsfreeze are the machine's: these take turns",
}


# Modules that need the machine to themselves: they go last, and the other workers stop once they have finished
# what they hold (at most two short tests run beside the start). None today: the load test's 1000 connections met
# the gateway's 10 s ask timeouts beside another worker until the router stopped awaiting its sessions (it passes
# beside two CPU-bound processes), so it now starts first with the other slow modules instead of alone at the end,
# where the second core sat idle for its whole run.
ALONE: set[str] = set()


class _ModuleGroups(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no types
    """A test is a unit of work of its own, or its module is when listed in ONE_WORKER or ALONE; units go out in
    collection order (see pytest_collection_modifyitems), to whichever worker is free."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return module if module in ONE_WORKER or module in ALONE else nodeid

    def _assign_work_unit(self, node: Any) -> None:
        if next(iter(self.workqueue)) in ALONE:
            for other in self.nodes:
                if other is not node and not other.shutting_down:
                    other.shutdown()  # it runs what it holds, then exits: the rest of the machine is this unit's
        super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    if config.getoption("dist") != "loadgroup":
        return None
    config.option.loadscopereorder = False  # the order is pytest_collection_modifyitems's, longest first
    return _ModuleGroups(config, log)


def _rank(item: pytest.Item) -> int:
    if str(item.path.relative_to(item.config.rootpath)) in ALONE:
        return 3
    if item.get_closest_marker("slow") is not None:
        return 0
    return 1 if item.path.name.startswith("test_webui") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest first, so no worker starts a minute-long test while the others have nothing left to do: the
    tests marked longest, then modules with a test marked slow, then the web UI's (each test in Chromium), then
    the rest, and ALONE's last. Apart from the longest, a module's tests stay together and in their order, so a
    module fixture is set up once per worker."""
    rank: dict[Path, int] = {}
    for item in items:
        rank[item.path] = min(rank.get(item.path, 3), _rank(item))
    items.sort(key=lambda item: -1 if item.get_closest_marker("longest") is not None else rank[item.path])


# storage/schema.py forgets the libraries its migrations imported (sqlite-utils and what it brings) and runs
# gc.collect(), so that a gateway's first start weighs what later ones do. The suite migrates hundreds of databases
# in its processes: with sqlite-utils imported here once (a library loaded before stays loaded) and the objects of
# the suite's own imports frozen out of the collector, an in-process gateway's start and stop take 0.03 s of CPU
# instead of 0.12 s. What a test creates is collected as before.
def pytest_collection_finish() -> None:
    gc.collect()
    gc.freeze()


def pytest_sessionfinish() -> None:
    # The shared Chromium of tests/gateway/browser.py, where a test used it: closed with the session.
    browser = sys.modules.get("tests.gateway.browser")
    if browser is not None:
        browser.chromium.stop()
