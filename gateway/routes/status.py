"""A minimal `GET /api/status` (admin) listing every registered status check; the full page lands separately."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.asgi import JSON, runtime_of
from gateway.auth import require_admin


async def status(request: Request) -> Response:
    require_admin(request)
    rt = runtime_of(request)
    checks: dict[str, Any] = {}
    for name, check in sorted(rt.status_checks.items()):
        try:
            checks[name] = check()
        except Exception as exc:
            checks[name] = {"status": "error", "details": {"error": f"{type(exc).__name__}: check failed"}}
    ok = all(c.get("status") == "ok" for c in checks.values())
    return JSON({"status": "ok" if ok else "degraded", "version": rt.version, "checks": checks})


def routes() -> list[BaseRoute]:
    return [Route("/api/status", status, methods=["GET"])]
