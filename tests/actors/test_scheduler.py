"""The cron scheduler under the autojump clock: fires on time, records runs, never double-fires after a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.providers.echo import EchoProvider
from actors.scheduler import Fired, ScheduleError, Scheduler, check_cron, next_slot
from storage import cron as cron_db
from storage.cron import CronJob
from tests.actors.harness import Harness, harness

# 2026-01-01T00:00:00Z: trio's clock starts near 0, so wall time = BASE + trio.current_time().
BASE = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def wall() -> float:
    return BASE + trio.current_time()


def make_job(*, cron: str | None = None, interval: int | None = None, created_s: float = 0.0) -> CronJob:
    created = int((BASE + created_s) * 1000)
    job = CronJob(
        id=cron_db.new_job_id(), owner=None, name="t", cron=cron, interval_seconds=interval, session_id=None,
        connector="cron", chat_id="c1", prompt="tick", enabled=True, next_fire_at=None, last_fire_at=None,
        created_at=created, updated_at=created,
    )  # fmt: skip
    return CronJob(**{**{f: getattr(job, f) for f in CronJob.__slots__}, "next_fire_at": next_slot(job, created)})


def test_next_slot_for_cron_and_interval() -> None:
    job = make_job(cron="*/5 * * * *")
    start = int(BASE * 1000)
    assert next_slot(job, start) == start + 5 * 60_000
    assert next_slot(job, start + 5 * 60_000) == start + 10 * 60_000
    every = make_job(interval=90)
    assert next_slot(every, start) == start + 90_000
    assert next_slot(every, start + 200_000) == start + 270_000
    check_cron("0 9 * * 1-5")
    for bad in ("* * *", "61 * * * *", "every minute", "* * * * * *"):
        with pytest.raises(ScheduleError):
            check_cron(bad)


async def _start(h: Harness, nursery: trio.Nursery, fired: list[Fired]) -> Scheduler:
    scheduler = Scheduler(h.store, h.address, wall=wall, on_fired=fired.append)
    await nursery.start(scheduler.run)
    return scheduler


async def test_fires_on_time_and_records_each_run(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(tmp_path, lambda: EchoProvider(), timeout=3600) as h:  # virtual seconds
        job = make_job(interval=60)
        await h.store.call(cron_db.create_job, job)
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            scheduler = await _start(h, nursery, fired)
            await trio.sleep(59)
            assert fired == []
            await trio.sleep(2)
            assert [f.slot for f in fired] == [job.created_at + 60_000]
            await trio.sleep(120)
            assert [f.slot for f in fired] == [job.created_at + k * 60_000 for k in (1, 2, 3)]
            assert all(f.accepted is not None for f in fired)
            assert scheduler.status()["status"] == "ok"
            nursery.cancel_scope.cancel()
        runs = await h.store.call(cron_db.runs_of, job.id)
        assert [(r.trigger, r.status) for r in runs] == [("schedule", "submitted")] * 3
        assert all(r.turn_id for r in runs)


async def test_a_cron_expression_fires_at_its_minutes(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(tmp_path, lambda: EchoProvider(), timeout=3600) as h:  # virtual seconds
        job = make_job(cron="*/5 * * * *")
        await h.store.call(cron_db.create_job, job)
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            await _start(h, nursery, fired)
            await trio.sleep(11 * 60)
            nursery.cancel_scope.cancel()
        base_ms = int(BASE * 1000)
        assert [f.slot for f in fired] == [base_ms + 5 * 60_000, base_ms + 10 * 60_000]


async def test_no_double_fire_after_a_crash(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(tmp_path, lambda: EchoProvider(), timeout=3600) as h:  # virtual seconds
        job = make_job(interval=60)
        await h.store.call(cron_db.create_job, job)
        await trio.sleep(61)
        # A scheduler claimed the due slot and the process died before it submitted the turn.
        claimed = await h.store.call(cron_db.claim_due, int(wall() * 1000), next_slot)
        assert [slot for _, slot in claimed] == [job.created_at + 60_000]
        # The restarted scheduler sees the slot as taken: it waits for the next one instead.
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            await _start(h, nursery, fired)
            await trio.testing.wait_all_tasks_blocked()
            assert fired == []
            await trio.sleep(60)
            assert [f.slot for f in fired] == [job.created_at + 120_000]
            nursery.cancel_scope.cancel()
        # And two schedulers started over the same database at the same moment fire a slot once between them.
        await trio.sleep(60)
        fired_a: list[Fired] = []
        fired_b: list[Fired] = []
        async with trio.open_nursery() as nursery:
            await _start(h, nursery, fired_a)
            await _start(h, nursery, fired_b)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert len(fired_a) + len(fired_b) == 1
        runs = await h.store.call(cron_db.runs_of, job.id)
        assert [r.status for r in runs] == ["claimed", "submitted", "submitted"]
        assert len({r.slot_at for r in runs}) == 3


async def test_a_missing_target_is_recorded_as_a_failed_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, lambda: EchoProvider(), timeout=3600) as h:  # virtual seconds
        job = make_job(interval=60)
        job = CronJob(**{**{f: getattr(job, f) for f in CronJob.__slots__}, "connector": None, "session_id": "gone"})
        await h.store.call(cron_db.create_job, job)
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            scheduler = Scheduler(h.store, h.address, wall=wall, on_fired=fired.append)
            await nursery.start(partial(scheduler.run))
            manual = await scheduler.trigger(job)
            nursery.cancel_scope.cancel()
        assert manual.accepted is None and manual.error is not None and "no longer exists" in manual.error
        runs = await h.store.call(cron_db.runs_of, job.id)
        assert [(r.trigger, r.status) for r in runs] == [("manual", "failed")]
