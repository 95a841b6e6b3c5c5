"""The cron scheduler actor: sleeps until the next due slot, claims it durably, then submits the job's turn."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from actors.base import ActorError, Address, ask
from actors.messages import RouterMsg, SessionKey, Submit, TurnAccepted
from actors.store import Store
from storage import cron as cron_db
from storage import sessions as sess_db
from storage.cron import CronJob
from storage.usage import UsageCapReachedError

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


def next_slot(job: CronJob, after_ms: int) -> int:
    """The job's first slot strictly after `after_ms` (UTC): cron slots, or interval steps from its creation."""
    if job.cron:
        from croniter import croniter

        start = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
        nxt: datetime = croniter(job.cron, start).get_next(datetime)
        return int(nxt.timestamp() * 1000)
    assert job.interval_seconds
    step = job.interval_seconds * 1000
    elapsed = max(0, after_ms - job.created_at)
    return job.created_at + (elapsed // step + 1) * step


@dataclass(frozen=True, slots=True)
class Fired:
    job: CronJob
    slot: int
    trigger: str
    accepted: TurnAccepted | None
    error: str | None


class Scheduler:
    """Fires due jobs. Wall time comes from `wall()` (seconds) so tests can drive it from trio's clock."""

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

    def now_ms(self) -> int:
        return int(self.wall() * 1000)

    def wake(self) -> None:
        """Re-read the jobs now (after one was created, toggled or deleted)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        if not self.running:
            return {"status": "error", "details": "the scheduler is not running"}
        if self.last_error:
            return {"status": "error", "details": self.last_error}
        return {"status": "ok", "details": f"{self.fired} run(s) fired"}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; a failing round is logged and retried, never fatal."""
        self.running = True
        task_status.started()
        try:
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
        """Run a job now, outside its schedule (recorded as a `manual` run)."""
        slot = await self.store.call(cron_db.claim_manual, job.id, self.now_ms())
        return await self.fire(job, slot, "manual")

    async def fire(self, job: CronJob, slot: int, trigger: str) -> Fired:
        """Submit the job's prompt to its target and record the outcome of the run (the slot is already claimed)."""
        accepted: TurnAccepted | None = None
        error: str | None = None
        try:
            key = await self._target(job)
            got: TurnAccepted = await ask(self.router, lambda r: Submit(key, job.prompt, r), timeout=10)
            accepted = got
        except (ActorError, LookupError, UsageCapReachedError) as exc:
            error = str(exc) or type(exc).__name__
            log.warning("cron job %s: cannot submit its turn: %s", job.id, error)
        await self.store.call(
            cron_db.finish_run,
            job.id,
            slot,
            status="submitted" if accepted else "failed",
            session_id=accepted.session_id if accepted else None,
            turn_id=accepted.turn_id if accepted else None,
            error=error,
        )
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
