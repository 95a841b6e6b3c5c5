"""The cron scheduler actor: sleeps until the next due slot, claims it durably, then submits the job's turn."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from actors.base import ActorError, Address, ask
from actors.messages import RouterMsg, SessionKey, Submit, TurnAccepted
from actors.store import Store
from storage import cron as cron_db
from storage import sessions as sess_db
from storage.cron import CronJob
from storage.events import EventRow
from storage.usage import UsageCapReachedError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

log = logging.getLogger("gateway.scheduler")
MAX_SLEEP = 60.0  # re-check at least this often, in case the wall clock was stepped


class ScheduleError(ValueError):
    """A cron expression or interval that cannot be scheduled; the message says why."""


def check_cron(expression: str) -> None:
    """Raise ScheduleError unless `expression` is a valid 5-field cron expression that fires on some date."""
    from croniter import CroniterBadDateError, croniter  # loaded with the first cron job, not at start (dateutil)

    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ScheduleError(f"{expression!r} is not a 5-field cron expression (minute hour day month weekday)")
    try:
        croniter(expression, datetime.now(UTC)).get_next(datetime)
    except CroniterBadDateError:  # e.g. "0 0 31 2 *": a day no month has (croniter looks decades ahead)
        raise ScheduleError(
            f"{expression!r} never fires: no date matches its day and month; pick one that exists"
        ) from None


def check_timezone(name: str) -> ZoneInfo:
    """The IANA zone called `name` (e.g. `Europe/Berlin`, `UTC`), or ScheduleError saying it is not one."""
    # The tzdata package backs zoneinfo where the OS has no tz database (Windows, slim images, the zipapp).
    # Imported with the first cron job's zone, not at start (it brings sysconfig: ~0.3 MiB).
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if name and len(name) <= 64 and name == name.strip():
            return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise ScheduleError(f"{name!r} is not an IANA timezone name (such as UTC, Europe/Berlin or America/New_York)")


def local_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time in `zone` names.

    A time the fall-back repeats names its first occurrence; a time the spring-forward skips names the moment the
    clocks jump, the first valid time after it. So a cron slot fires once in both cases.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In the gap: fold=1 reads it with the offset after the jump (an instant before it), fold=0 with the offset
    # before (an instant after it); the jump lies between, found to the second.
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(first.timestamp())
    if lo > hi:
        lo, hi = hi, lo
    after = _offset(hi, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, zone) == after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _offset(t: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(t, UTC).astimezone(zone).utcoffset()


def next_cron_time(expression: str, zone: ZoneInfo, after_ms: int) -> int:
    """The first slot of `expression`, read as wall-clock times in `zone`, strictly after `after_ms` (UTC ms)."""
    from croniter import croniter

    after = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
    # croniter walks the zone's wall clock as if it were UTC, so it never sees a DST jump; each wall time is then
    # placed in the zone (`local_instant`). Wall times that land at or before `after` (the second pass of a repeated
    # hour, the skipped ones merged into the jump) are passed over, so each fires once.
    wall = after.astimezone(zone).replace(tzinfo=UTC)
    slots = croniter(expression, wall)
    for _ in range(10_000):
        nxt: datetime = slots.get_next(datetime)
        ms = int(local_instant(nxt.replace(tzinfo=None), zone).timestamp() * 1000)
        if ms > after_ms:
            return ms
    raise ScheduleError(f"{expression!r} has no slot after {after.isoformat()} in {zone.key}")


def next_slot(job: CronJob, after_ms: int) -> int:
    """The job's first slot strictly after `after_ms` (UTC): cron slots in its timezone, or interval steps from its
    creation."""
    if job.cron:
        return next_cron_time(job.cron, check_timezone(job.timezone), after_ms)
    assert job.interval_seconds
    step = job.interval_seconds * 1000
    elapsed = max(0, after_ms - job.created_at)
    return job.created_at + (elapsed // step + 1) * step


class Fired(msgspec.Struct, frozen=True):
    job: CronJob
    slot: int
    trigger: str
    accepted: TurnAccepted | None
    error: str | None


class Scheduler:
    """Fires due jobs and records each run's end. Wall time comes from `wall()` (seconds) so tests can drive it
    from trio's clock. Give `on_event` every session event (it watches for the end of the runs' turns)."""

    def __init__(
        self,
        store: Store,
        router: Address[RouterMsg],
        *,
        wall: Callable[[], float] = time.time,
        on_fired: Callable[[Fired], None] | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.wall = wall
        self.on_fired = on_fired
        self.fired = 0
        self.last_error: str | None = None
        self.running = False
        self._wake = trio.Event()
        self._open: set[str] = set()  # turn ids of runs still running
        self._ended = trio.Event()  # one of them has ended

    def now_ms(self) -> int:
        return int(self.wall() * 1000)

    def wake(self) -> None:
        """Re-read the jobs now (after one was created, changed or deleted)."""
        self._wake.set()

    def on_event(self, event: EventRow) -> None:
        """An event listener (synchronous, cheap): a run's turn has ended, so its run gets its end recorded."""
        if event.type == "turn_ended" and event.turn_id in self._open:
            self._open.discard(event.turn_id)
            self._ended.set()

    def status(self) -> dict[str, Any]:
        if not self.running:
            return {"status": "error", "details": "the scheduler is not running"}
        if self.last_error:
            return {"status": "error", "details": self.last_error}
        return {"status": "ok", "details": f"{self.fired} run(s) fired"}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; a failing round is logged and retried, never fatal."""
        # Runs an earlier life left open: those never submitted end as errors, those whose turn has ended since
        # (or was marked interrupted at start) take its end, the rest (turns still queued) are watched.
        now = self.now_ms()
        await self.store.call(cron_db.fail_unsubmitted, now_ms=now)
        await self.store.call(cron_db.settle_runs, now_ms=now)
        self._open.update(await self.store.call(cron_db.open_turns))
        self.running = True
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._settle_loop)
                while True:
                    delay = MAX_SLEEP
                    try:
                        delay = await self.tick()
                        self.last_error = None
                    except Exception as exc:
                        self.last_error = f"scheduler round failed: {exc!r}"
                        log.error("%s", self.last_error)
                        delay = 5.0
                    with trio.move_on_after(max(0.0, min(delay, MAX_SLEEP))):
                        await self._wake.wait()
                    self._wake = trio.Event()
        finally:
            self.running = False

    async def _settle_loop(self) -> None:
        while True:
            await self._ended.wait()
            self._ended = trio.Event()
            try:
                await self.store.call(cron_db.settle_runs, now_ms=self.now_ms())
            except Exception as exc:  # retried at the next end, and by every round that claims a slot
                log.error("cannot record the end of a cron run: %r", exc)

    async def tick(self) -> float:
        """Fire what is due now; return the seconds until the next slot."""
        now = self.now_ms()
        for job, slot in await self.store.call(cron_db.claim_due, now, next_slot):
            await self.fire(job, slot, "schedule")
        jobs = await self.store.call(cron_db.list_jobs, None, all_owners=True)
        upcoming = [j.next_fire_at for j in jobs if j.enabled and j.next_fire_at is not None]
        if not upcoming:
            return MAX_SLEEP
        return max(0.0, (min(upcoming) - self.now_ms()) / 1000)

    async def trigger(self, job: CronJob) -> Fired:
        """Run a job now, outside its schedule (recorded as a `manual` run, even while a scheduled one runs)."""
        slot = await self.store.call(cron_db.claim_manual, job.id, self.now_ms())
        return await self.fire(job, slot, "manual")

    async def fire(self, job: CronJob, slot: int, trigger: str) -> Fired:
        """Submit the job's prompt to its target and record the run's turn (the slot is already claimed); the run
        ends when that turn does."""
        accepted: TurnAccepted | None = None
        error: str | None = None
        try:
            key = await self._target(job)
            got: TurnAccepted = await ask(self.router, lambda r: Submit(key, job.prompt, r), timeout=10)
            accepted = got
        except (ActorError, LookupError, UsageCapReachedError) as exc:
            error = str(exc) or type(exc).__name__
            log.warning("cron job %s: cannot submit its turn: %s", job.id, error)
        except Exception as exc:  # recorded rather than left `running`, which would skip every later slot
            error = f"{type(exc).__name__}: {exc}"
            log.exception("cron job %s: submitting its turn failed", job.id)
        if accepted is not None:
            self._open.add(accepted.turn_id)
            await self.store.call(
                cron_db.run_submitted,
                job.id,
                slot,
                session_id=accepted.session_id,
                turn_id=accepted.turn_id,
                now_ms=self.now_ms(),
            )
        else:
            await self.store.call(cron_db.run_failed, job.id, slot, error=error or "failed", now_ms=self.now_ms())
        self.fired += 1
        fired = Fired(job, slot, trigger, accepted, error)
        if self.on_fired is not None:
            self.on_fired(fired)
        return fired

    async def _target(self, job: CronJob) -> SessionKey:
        if job.session_id:
            row = await self.store.call(sess_db.get_session, job.session_id)
            if row is None:
                raise LookupError(f"the target session {job.session_id} no longer exists")
            return SessionKey(row.transport, row.chat_id, row.topic_id)
        if job.connector and job.chat_id:
            return SessionKey(job.connector, job.chat_id)
        raise LookupError("the job has no target")
