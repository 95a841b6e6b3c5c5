"""Starts the features the edges need beside the router: REST auth state, notifications, the cron scheduler."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from actors.scheduler import Fired, Scheduler
from actors.supervisor import Supervisor, service
from gateway.core import Runtime, started
from gateway.http.credentials import PasswordHasher, TokenIssuer, load_jwt_secret
from gateway.http.ratelimit import FailedAuthThrottle, Rate, RateLimiter, StreamLimiter
from gateway.http.reststate import RestState
from gateway.notify import BackgroundTurns

log = logging.getLogger("gateway.cron")


async def start_rest_services(runtime: Runtime, core: Supervisor) -> None:
    """Build the REST state, start the cron scheduler under `core` and register the status checks."""
    config = runtime.config
    lim = config.limits
    runtime.services.rest = RestState(
        issuer=TokenIssuer(
            load_jwt_secret(runtime.paths.jwt_secret_file),
            access_ttl=config.auth.access_ttl,
            refresh_ttl=config.auth.refresh_ttl,
        ),
        hasher=PasswordHasher(config.auth.hash_concurrency),
        limiter=RateLimiter(
            {
                "auth": Rate(lim.auth_per_minute, lim.auth_burst),
                "chat": Rate(lim.chat_per_minute, lim.chat_burst),
                "api": Rate(lim.api_per_minute, lim.api_burst),
                "upload": Rate(lim.upload_per_minute, lim.upload_burst),
            }
        ),
        streams=StreamLimiter(lim.max_streams),
        note_streams=StreamLimiter(lim.max_streams),
        throttle=FailedAuthThrottle(free=lim.failed_auth_free, max_delay=lim.failed_auth_max_delay)
        if lim.enabled
        else None,
    )
    runtime.paths.files_dir.mkdir(parents=True, exist_ok=True)

    background = BackgroundTurns(runtime)
    runtime.services.background = background
    runtime.event_listeners.append(background.on_event)
    await core.start(service("background-turns", background.run, registry=runtime.registry))
    await start_scheduler(runtime, core)
    runtime.status_checks["storage"] = lambda: _storage_status(runtime)
    runtime.status_checks["disk"] = lambda: _disk_status(runtime)


def _storage_status(runtime: Runtime) -> dict[str, Any]:
    stats = runtime.store.address.backlog()
    return {"status": "ok", "details": f"queued operations: {stats}"}


def _disk_status(runtime: Runtime) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(runtime.paths.data_dir)
    except OSError as exc:
        return {"status": "error", "details": f"cannot read disk usage of the data folder: {exc.strerror}"}
    free_mib = usage.free // (1024 * 1024)
    if usage.free < runtime.config.storage.min_free_disk_mb * 1024 * 1024:
        return {"status": "error", "details": f"only {free_mib} MiB free in {runtime.paths.data_dir}; free some space"}
    return {"status": "ok", "details": f"{free_mib} MiB free"}


async def start_scheduler(runtime: Runtime, core: Supervisor) -> Scheduler:
    """Start the scheduler under `core`, report it in `/api/status` and notify about each run."""
    background = started(runtime.services.background, "the background-turn notifier")

    def on_fired(f: Fired) -> None:
        title = f"Cron {f.job.name or f.job.id}"
        if f.accepted is not None:
            log.info(
                "cron job %s (%s) fired (%s): turn %s in session %s",
                f.job.id, f.job.name or "unnamed", f.trigger, f.accepted.turn_id, f.accepted.session_id,
            )  # fmt: skip
            background.watch(f.accepted.turn_id, title=title, source="cron", owner=f.job.owner)
        else:
            background.failed(title=title, error=f.error or "", source="cron", owner=f.job.owner)

    scheduler = Scheduler(runtime.store, runtime.router_address, on_fired=on_fired)
    runtime.services.scheduler = scheduler
    runtime.event_listeners.append(scheduler.on_event)  # a run ends when its turn does
    runtime.status_checks["scheduler"] = scheduler.status
    await core.start(service("scheduler", scheduler.run, registry=runtime.registry, announces=True))
    return scheduler
