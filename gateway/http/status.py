"""The status report (`GET /api/status`): every service's check, computed without the REST plumbing, so that the
layer in front of the Starlette app (`gateway.http.front`) answers it without building that app."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from gateway.core import Runtime
from gateway.logs import redactor
from storage import sessions as sess_db
from storage.db import integrity_check


class ServiceStatus(msgspec.Struct, kw_only=True):
    service: str
    status: Literal["ok", "error"]
    # A sentence, or structured facts (e.g. per connector: state, last_error, restarts, backlog).
    details: str | dict[str, Any]


class StatusResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok", "error"]
    version: str
    uptime: float
    sessions: int  # stored sessions (`gateway status` shows it)
    services: list[ServiceStatus]


INTEGRITY_TTL = 60.0  # seconds a verdict is reused: a monitor polling /api/status must not rescan the file each time


async def _integrity(rt: Runtime) -> str:
    """`PRAGMA integrity_check` on a read-only connection in a worker thread, so the scan of a large database
    never holds up the store's single writer; one scan at a time, its verdict reused for INTEGRITY_TTL."""
    async with rt.services.integrity_lock:
        cached = rt.services.integrity_verdict
        if cached is not None and trio.current_time() - cached[0] < INTEGRITY_TTL:
            return cached[1]
        verdict = f"the database did not answer within {rt.store.timeout:g} s (the disk may be frozen)"
        with trio.move_on_after(rt.store.timeout):
            # Abandoned when the disk does not answer: status must answer anyway (the next scan waits its turn).
            verdict = await trio.to_thread.run_sync(_check_file, rt.paths.db_file, abandon_on_cancel=True)
            rt.services.integrity_verdict = (trio.current_time(), verdict)
        return verdict


def _check_file(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return integrity_check(conn)
    finally:
        conn.close()


def _check(name: str, fn: Any) -> ServiceStatus:
    # Details carry actors' last errors, which may quote a secret (a bot token in a URL): every check's output is
    # redacted here, in the one place they all pass, rather than by each check.
    try:
        result = fn()
        ok = result.get("status") == "ok"
        details = result.get("details", "")
        if not isinstance(details, dict):
            details = str(details)
        return ServiceStatus(service=name, status="ok" if ok else "error", details=redactor.redact_data(details))
    except Exception as exc:
        # A broken check is itself an error to show, never a 500.
        return ServiceStatus(service=name, status="error", details=redactor.redact(f"the check failed: {exc!r}"))


async def report(rt: Runtime) -> tuple[int, Any]:
    """`GET /api/status`'s HTTP status and body: a `StatusResponse`, or with a service in error a 503 whose
    `error.details` is that report."""
    services: list[ServiceStatus] = []
    sessions = 0
    try:
        verdict = await _integrity(rt)
        sessions = await rt.store.read(sess_db.count_sessions)
        degraded = rt.store.degraded()
        if degraded is not None:
            # Reads still work, so integrity_check passes; but writes are refused (disk full, read-only, frozen).
            services.append(ServiceStatus(service="storage", status="error", details=redactor.redact(degraded)))
        else:
            ok = verdict == "ok"
            services.append(ServiceStatus(service="storage", status="ok" if ok else "error", details=verdict))
    except Exception as exc:
        services.append(
            ServiceStatus(
                service="storage", status="error", details=redactor.redact(f"the database does not answer: {exc}")
            )
        )
    services.extend(_check(name, fn) for name, fn in sorted(rt.status_checks.items()) if name != "storage")
    bad = [s.service for s in services if s.status == "error"]
    body = StatusResponse(
        status="error" if bad else "ok",
        version=rt.version,
        uptime=round(rt.uptime(), 3),
        sessions=sessions,
        services=services,
    )
    if bad:
        message = f"in error: {', '.join(bad)}"
        return 503, {"error": {"code": "SERVICE_UNAVAILABLE", "message": message, "details": body}}
    return 200, body
