"""The serving process's collector: a full collection once a burst of work is over, never during it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.daemon.serve import (
    GC_SETTLE,
    GC_THRESHOLDS,
    _young_collections,
    collect_when_quiet,
    give_memory_back,
    tune_gc_once_started,
)
from tests.conftest import make_config, start_gateway


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


class _Junk:
    pass


def _one_young_collection() -> None:
    """Allocate past the young generation's threshold, so the interpreter runs one young collection (instances,
    not empty lists: a list reused from the interpreter's free list does not count as a new object)."""
    young = _young_collections()
    junk = [_Junk() for _ in range(GC_THRESHOLDS[0] + 10)]
    del junk
    assert _young_collections() == young + 1


@pytest.fixture
def serving_thresholds() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("serving_thresholds")
async def test_no_full_collection_while_busy_then_one_once_quiet(autojump_clock: trio.testing.MockClock) -> None:
    # Seven gen-1 collections at most: the interpreter's own full collections need more than ten.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_when_quiet, 1.0, 3)
        before = _full_collections()
        for _ in range(60):
            _one_young_collection()
            await trio.sleep(0.4)
        assert _full_collections() == before
        await trio.sleep(2.5)
        assert _full_collections() == before + 1
        # Quiet with nothing new to collect: no more full collections.
        await trio.sleep(30)
        assert _full_collections() == before + 1
        nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("serving_thresholds")
async def test_too_little_work_since_the_last_full_collection_runs_none(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_when_quiet, 1.0, 3)
        before = _full_collections()
        _one_young_collection()
        _one_young_collection()
        await trio.sleep(30)
        assert _full_collections() == before
        # A third young collection since the last full one (the fixture's): one full collection follows.
        _one_young_collection()
        await trio.sleep(2.5)
        assert _full_collections() == before + 1
        nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("serving_thresholds")
async def test_memory_is_given_back_after_each_full_collection_it_runs(autojump_clock: trio.testing.MockClock) -> None:
    released: list[int] = []

    async def release() -> None:
        released.append(_full_collections())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_when_quiet, 1.0, 3, release)
        for _ in range(3):
            _one_young_collection()
        await trio.sleep(2.5)
        # Right after the full collection it ran, never while busy or with nothing collected.
        assert released == [_full_collections()]
        await trio.sleep(30)
        assert len(released) == 1
        nursery.cancel_scope.cancel()


async def test_give_memory_back_goes_through_the_store_and_the_gateway_serves_on(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The page cache is released inside the store's own transaction (SQLite allows the pragma there), and the
    # store answers the next call as before.
    gw = await start_gateway(nursery, *make_config(tmp_path))
    with trio.fail_after(30):
        await give_memory_back(gw.runtime)
        sessions = await gw.runtime.store.call(lambda conn: conn.execute("SELECT count(*) FROM sessions").fetchone())
        assert sessions is not None
        await gw.stop()


async def test_the_collector_is_tuned_once_the_start_has_settled_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The full collection and freeze wait GC_SETTLE after the socket is bound, off the first requests' way.
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        frozen = gc.get_freeze_count()
        start_up_made = [_Junk() for _ in range(100)]  # lives as long as the process, like a route table
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tune_gc_once_started)
            await trio.sleep(GC_SETTLE * 0.9)
            assert gc.get_threshold() == (700, 10, 10)
            assert gc.get_freeze_count() == frozen
            await trio.sleep(GC_SETTLE * 0.2)
            assert gc.get_threshold() == GC_THRESHOLDS
            assert gc.get_freeze_count() >= frozen + len(start_up_made)
    finally:
        gc.set_threshold(*thresholds)
