"""The cron scheduler under the autojump clock: fires on time, records runs, never double-fires after a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from actors.providers.echo import EchoProvider
from actors.scheduler import (
    Fired,
    ScheduleError,
    Scheduler,
    check_cron,
    check_timezone,
    local_instant,
    next_cron_time,
    next_slot,
)
from storage import cron as cron_db
from storage.cron import CronJob
from storage.events import EventRow
from tests.actors.harness import Harness, harness

# 2026-01-01T00:00:00Z: trio's clock starts near 0, so wall time = BASE + trio.current_time().
BASE = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def wall() -> float:
    return BASE + trio.current_time()


def make_job(
    *, cron: str | None = None, interval: int | None = None, created_s: float = 0.0, timezone: str = "UTC"
) -> CronJob:
    created = int((BASE + created_s) * 1000)
    job = CronJob(
        id=cron_db.new_job_id(), owner=None, name="t", cron=cron, interval_seconds=interval, session_id=None,
        connector="cron", chat_id="c1", prompt="tick", enabled=True, next_fire_at=None, last_fire_at=None,
        created_at=created, updated_at=created, timezone=timezone,
    )  # fmt: skip
    return msgspec.structs.replace(job, next_fire_at=next_slot(job, created))


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
    listen(h, scheduler)
    await nursery.start(scheduler.run)
    return scheduler


_listeners: dict[int, list[Scheduler]] = {}


def listen(h: Harness, scheduler: Scheduler) -> None:
    """Give the scheduler every session event, as gateway/features.py does (a session keeps the router's callback
    from its start, so one callback tells every scheduler a test starts)."""
    schedulers = _listeners.setdefault(id(h.router), [])
    schedulers.append(scheduler)

    def tell(event: EventRow) -> None:
        for s in schedulers:
            s.on_event(event)

    h.router.on_event = tell


async def settled(h: Harness, job_id: str, count: int) -> list[cron_db.CronRun]:
    """The job's runs once `count` of them have ended (waits on the stored rows)."""
    while True:
        runs = await h.store.call(cron_db.runs_of, job_id)
        if len(runs) >= count and all(r.status != "running" for r in runs):
            return runs
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.01)


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
            runs = await settled(h, job.id, 3)
            nursery.cancel_scope.cancel()
        assert [(r.trigger, r.status) for r in runs] == [("schedule", "ok")] * 3
        assert all(r.ended_at is not None and r.ended_at >= r.started_at for r in runs)
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
        await trio.sleep(1)  # the restart comes later than the crash
        # The restarted scheduler sees the slot as taken: it waits for the next one instead.
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            await _start(h, nursery, fired)
            await trio.testing.wait_all_tasks_blocked()
            assert fired == []
            await trio.sleep(59)
            assert [f.slot for f in fired] == [job.created_at + 120_000]
            nursery.cancel_scope.cancel()
        # And two schedulers started over the same database at the same moment fire a slot once between them.
        await trio.sleep(60)
        fired_a: list[Fired] = []
        fired_b: list[Fired] = []
        async with trio.open_nursery() as nursery:
            await _start(h, nursery, fired_a)
            await _start(h, nursery, fired_b)
            runs = await settled(h, job.id, 3)
            nursery.cancel_scope.cancel()
        assert len(fired_a) + len(fired_b) == 1
        assert [r.status for r in runs] == ["error", "ok", "ok"], runs
        assert runs[0].error == "the gateway stopped before the run's turn was submitted"
        assert len({r.slot_at for r in runs}) == 3


async def test_a_missing_target_is_recorded_as_a_failed_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, lambda: EchoProvider(), timeout=3600) as h:  # virtual seconds
        job = make_job(interval=60)
        job = msgspec.structs.replace(job, connector=None, session_id="gone")
        await h.store.call(cron_db.create_job, job)
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            scheduler = Scheduler(h.store, h.address, wall=wall, on_fired=fired.append)
            await nursery.start(partial(scheduler.run))
            manual = await scheduler.trigger(job)
            nursery.cancel_scope.cancel()
        assert manual.accepted is None and manual.error is not None and "no longer exists" in manual.error
        runs = await h.store.call(cron_db.runs_of, job.id)
        assert [(r.trigger, r.status) for r in runs] == [("manual", "error")]
        assert runs[0].error is not None and "no longer exists" in runs[0].error


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M")


def _slots(expression: str, zone: str, start: datetime, count: int) -> list[str]:
    ms, out = int(start.timestamp() * 1000), []
    for _ in range(count):
        ms = next_cron_time(expression, check_timezone(zone), ms)
        out.append(_utc(ms))
    return out


def test_cron_slots_are_read_in_the_jobs_zone() -> None:
    # 09:00 on weekdays in Berlin: 08:00Z in winter, 07:00Z once summer time starts (Sunday 29 March 2026).
    assert _slots("0 9 * * 1-5", "Europe/Berlin", datetime(2026, 3, 26, 12, tzinfo=UTC), 3) == [
        "03-27 08:00", "03-30 07:00", "03-31 07:00",
    ]  # fmt: skip
    assert _slots("0 9 * * *", "UTC", datetime(2026, 3, 26, 12, tzinfo=UTC), 1) == ["03-27 09:00"]
    assert _slots("30 5 * * *", "Asia/Kolkata", datetime(2025, 12, 31, 23, tzinfo=UTC), 1) == ["01-01 00:00"]


def test_a_slot_the_spring_forward_skips_fires_once_when_the_clocks_jump() -> None:
    # New York, Sunday 8 March 2026: 02:00 EST becomes 03:00 EDT (07:00Z); 02:30 does not exist that day.
    assert _slots("30 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC), 3) == [
        "03-08 07:00", "03-09 06:30", "03-10 06:30",
    ]  # fmt: skip
    # Every 20 minutes: 02:00, 02:20, 02:40 are skipped; with 03:00 they are one slot at the jump, not four.
    assert _slots("*/20 * * * *", "America/New_York", datetime(2026, 3, 8, 6, 30, tzinfo=UTC), 4) == [
        "03-08 06:40", "03-08 07:00", "03-08 07:20", "03-08 07:40",
    ]  # fmt: skip


def test_a_slot_in_the_repeated_hour_fires_once() -> None:
    # New York, Sunday 1 November 2026: 02:00 EDT becomes 01:00 EST (06:00Z); 01:00-01:59 happens twice.
    assert _slots("30 1 * * *", "America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), 2) == [
        "11-01 05:30", "11-02 06:30",
    ]  # fmt: skip
    # Every 20 minutes: the repeated wall times (01:00 .. 01:40 EST) are not fired a second time.
    assert _slots("*/20 * * * *", "America/New_York", datetime(2026, 11, 1, 4, 50, tzinfo=UTC), 5) == [
        "11-01 05:00", "11-01 05:20", "11-01 05:40", "11-01 07:00", "11-01 07:20",
    ]  # fmt: skip
    # Asked from inside the second pass, the next slot is the first wall time not yet passed.
    inside = int(datetime(2026, 11, 1, 6, 10, tzinfo=UTC).timestamp() * 1000)  # 01:10 EST
    assert _utc(next_cron_time("30 1 * * *", check_timezone("America/New_York"), inside)) == "11-02 06:30"
    # A half-hour shift (Lord Howe, 5 April 2026: 02:00 +11 becomes 01:30 +10:30) is handled the same way.
    assert _slots("0,30 * * * *", "Australia/Lord_Howe", datetime(2026, 4, 4, 14, tzinfo=UTC), 3) == [
        "04-04 14:30", "04-04 15:30", "04-04 16:00",
    ]  # fmt: skip


def test_local_instant_of_skipped_and_repeated_wall_times() -> None:
    zone = check_timezone("America/New_York")
    assert local_instant(datetime(2026, 3, 8, 2, 30), zone) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert local_instant(datetime(2026, 11, 1, 1, 30), zone) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert local_instant(datetime(2026, 7, 1, 12, 0), zone) == datetime(2026, 7, 1, 16, 0, tzinfo=UTC)


def test_unknown_timezones_are_refused() -> None:
    for bad in ("Mars/Olympus", "", "europe/berlin ", "../../etc/passwd", "/etc/localtime", "x" * 100):
        with pytest.raises(ScheduleError, match="not an IANA timezone"):
            check_timezone(bad)
    assert check_timezone("Pacific/Chatham").key == "Pacific/Chatham"


async def test_a_job_fires_at_its_zones_wall_time(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(tmp_path, lambda: EchoProvider(), timeout=7 * 86400) as h:  # virtual seconds
        job = make_job(cron="0 9 * * *", timezone="America/New_York")
        await h.store.call(cron_db.create_job, job)
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            await _start(h, nursery, fired)
            await trio.sleep(86400)
            nursery.cancel_scope.cancel()
        # 09:00 EST on 1 January 2026 is 14:00Z.
        assert [_utc(f.slot) for f in fired] == ["01-01 14:00"]


async def test_a_slot_that_comes_while_the_last_run_runs_is_skipped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Each turn takes 80 virtual seconds (two words, 40 s apart); the job comes every 60.
    async with harness(tmp_path, lambda: EchoProvider(delay=40), timeout=3600) as h:  # virtual seconds
        job = msgspec.structs.replace(make_job(interval=60), prompt="tick tock")
        await h.store.call(cron_db.create_job, job)
        fired: list[Fired] = []
        async with trio.open_nursery() as nursery:
            await _start(h, nursery, fired)
            await trio.sleep(200)
            runs = await settled(h, job.id, 3)
            nursery.cancel_scope.cancel()
        assert [f.slot - job.created_at for f in fired] == [60_000, 180_000]
        # Waiting for the run at 180 s to end (260 s) let the slot at 240 s come while it ran: skipped too.
        assert [(r.slot_at - job.created_at, r.status) for r in runs] == [
            (60_000, "ok"), (120_000, "skipped"), (180_000, "ok"), (240_000, "skipped"),
        ]  # fmt: skip
        assert runs[1].error == "the previous run of this job was still running"
        assert runs[1].turn_id is None and runs[1].started_at == runs[1].ended_at
        assert runs[0].ended_at is not None and runs[0].turn_id is not None  # its turn's end (the turn's own clock)
