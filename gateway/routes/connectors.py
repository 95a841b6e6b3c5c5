"""Connector HTTP routes: runtime CRUD, secrets, personas, reply targets, the outbox, and every ingress route."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors.base import AskTimeoutError, BusyError, DeadActorError, ask
from actors.connector import Answer, Inbound
from gateway.asgi import JSON, runtime_of
from gateway.auth import require_admin
from gateway.connectors.model import SLOT_RE, ReplyHandle, check_kind, check_reply_handle
from gateway.connectors.service import ConnectorService
from gateway.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    ValidationFailedError,
)
from storage import connectors as conn_db
from storage import outbox as outbox_db
from storage import secrets as secret_db
from storage import sessions as sess_db

MAX_INGRESS_BODY = 2 * 1024 * 1024 + 64 * 1024
MAX_ADMIN_BODY = 256 * 1024


def service_of(request: Request) -> ConnectorService:
    svc = runtime_of(request).connectors
    if svc is None:
        raise UnavailableError("the connector service is not running")
    assert isinstance(svc, ConnectorService)
    return svc


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) past `limit` bytes without buffering more than that."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    body = await read_body(request, MAX_ADMIN_BODY)
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidRequestError("the body is not valid JSON") from None


# ---- runtime CRUD (admin) ----


async def list_connectors(request: Request) -> Response:
    require_admin(request)
    return JSON({"connectors": await service_of(request).list_views()})


async def get_connector(request: Request) -> Response:
    require_admin(request)
    p = request.path_params
    return JSON(await service_of(request).view(p["kind"], p["name"]))


async def put_connector(request: Request) -> Response:
    require_admin(request)
    p = request.path_params
    check_kind(p["kind"])
    view, created = await service_of(request).put(p["kind"], p["name"], await json_body(request))
    return JSON(view, status_code=201 if created else 200)


async def delete_connector(request: Request) -> Response:
    require_admin(request)
    p = request.path_params
    await service_of(request).delete(p["kind"], p["name"])
    return Response(status_code=204)


# ---- secrets and personas (admin) ----


async def list_secrets(request: Request) -> Response:
    require_admin(request)
    slots = await service_of(request).store.call(secret_db.list_slots)
    return JSON({"secrets": [{"slot": s, "configured": True, "updated_at": t} for s, t in slots]})


async def put_secret(request: Request) -> Response:
    require_admin(request)
    slot = request.path_params["slot"]
    if not SLOT_RE.match(slot):
        raise ValidationFailedError("invalid slot name: use letters, digits and _./:-")
    body = await json_body(request)
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) != {"value"} or not isinstance(value, str) or not value:
        raise ValidationFailedError('send {"value": "<secret>"} with a non-empty string')
    restarted = await service_of(request).put_secret(slot, value)
    return JSON({"slot": slot, "configured": True, "restarted": restarted})


async def put_persona(request: Request) -> Response:
    require_admin(request)
    pid = request.path_params["persona_id"]
    body = await json_body(request)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise ValidationFailedError('send {"name": "<persona name>"}')
    await service_of(request).store.call(conn_db.put_persona, pid, name)
    return JSON({"id": pid, "name": name})


# ---- reply targets (admin) ----


class ReplyTargetsBody(msgspec.Struct, forbid_unknown_fields=True):
    reply_targets: list[ReplyHandle]


async def get_reply_targets(request: Request) -> Response:
    require_admin(request)
    sid = request.path_params["session_id"]
    store = service_of(request).store
    if await store.call(sess_db.get_session, sid) is None:
        raise NotFoundError(f"no session {sid}")
    targets = await store.call(conn_db.get_reply_targets, sid)
    return JSON({"session_id": sid, "reply_targets": targets or []})


async def put_reply_targets(request: Request) -> Response:
    require_admin(request)
    sid = request.path_params["session_id"]
    try:
        body = msgspec.convert(await json_body(request), ReplyTargetsBody, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationFailedError(f"invalid reply targets: {exc}") from None
    for i, h in enumerate(body.reply_targets):
        check_reply_handle(h, f"reply target {i}")
    targets = [msgspec.to_builtins(h) for h in body.reply_targets]
    import time

    def txn(conn: Any) -> bool:
        if sess_db.get_session(conn, sid) is None:
            return False
        conn_db.set_reply_targets(conn, sid, targets, now_ms=time.time_ns() // 1_000_000)
        return True

    if not await service_of(request).store.call(txn):
        raise NotFoundError(f"no session {sid}")
    return JSON({"session_id": sid, "reply_targets": targets})


# ---- outbox (admin) ----


async def list_outbox(request: Request) -> Response:
    require_admin(request)
    state = request.query_params.get("state")
    if state is not None and state not in outbox_db.STATES:
        raise ValidationFailedError(f"state must be one of {', '.join(outbox_db.STATES)}")
    rows = await service_of(request).store.call(
        outbox_db.list_deliveries, state=state, session_id=request.query_params.get("session_id")
    )
    return JSON({"deliveries": [d.view() for d in rows]})


async def retry_delivery(request: Request) -> Response:
    require_admin(request)
    svc = service_of(request)
    import time

    did = request.path_params["delivery_id"]
    if not await svc.store.call(outbox_db.retry_dead_letter, did, now_ms=time.time_ns() // 1_000_000):
        raise NotFoundError(f"no dead-lettered delivery {did}")
    if svc.outbox_address is not None:
        from actors.outbox import send_kick

        send_kick(svc.outbox_address)
    return JSON({"delivery_id": did, "state": "pending"})


# ---- ingress (each connector's own authentication) ----


async def _ingress(request: Request, kind: str, action: str) -> Response:
    svc = service_of(request)
    name = request.path_params["name"]
    ref = f"{kind}/{name}"
    if svc.config_of(ref) is None:
        raise NotFoundError(f"no {kind} connector named {name!r}")
    address = svc.actors.address_of(ref)
    if address is None:
        raise UnavailableError(f"connector {ref} is not running; see /api/status", headers={"Retry-After": "5"})
    body = await read_body(request, MAX_INGRESS_BODY)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        answer: Answer = await ask(address, lambda r: Inbound(action, headers, body, r), timeout=60)
    except BusyError:
        raise UnavailableError(f"connector {ref} is busy; retry shortly", headers={"Retry-After": "1"}) from None
    except (DeadActorError, AskTimeoutError):
        raise UnavailableError(f"connector {ref} did not answer; retry", headers={"Retry-After": "5"}) from None
    if answer.media_type == "application/json":
        return JSON(answer.body, status_code=answer.status, headers=answer.headers)
    return Response(answer.body, status_code=answer.status, headers=answer.headers, media_type=answer.media_type)


async def ingress_root(request: Request) -> Response:
    kind = request.path_params["kind"]
    if kind not in ("http", "slack", "telegram"):
        raise NotFoundError(f"no ingress route for {kind!r} connectors here; external ones use /events")
    return await _ingress(request, kind, "")


async def external_events(request: Request) -> Response:
    return await _ingress(request, "external", "events")


async def external_batch(request: Request) -> Response:
    return await _ingress(request, "external", "events/batch")


async def external_credentials(request: Request) -> Response:
    return await _ingress(request, "external", "credentials/" + request.path_params["key"])


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/runtime/connectors", list_connectors, methods=["GET"]),
        Route("/v1/runtime/connectors/{kind}/{name}", get_connector, methods=["GET"]),
        Route("/v1/runtime/connectors/{kind}/{name}", put_connector, methods=["PUT"]),
        Route("/v1/runtime/connectors/{kind}/{name}", delete_connector, methods=["DELETE"]),
        Route("/v1/runtime/secrets", list_secrets, methods=["GET"]),
        Route("/v1/runtime/secrets/{slot:path}", put_secret, methods=["PUT"]),
        Route("/v1/runtime/personas/{persona_id}", put_persona, methods=["PUT"]),
        Route("/v1/runtime/outbox", list_outbox, methods=["GET"]),
        Route("/v1/runtime/outbox/{delivery_id}/retry", retry_delivery, methods=["POST"]),
        Route("/v1/sessions/{session_id}/reply-targets", get_reply_targets, methods=["GET"]),
        Route("/v1/sessions/{session_id}/reply-targets", put_reply_targets, methods=["PUT"]),
        Route("/v1/connectors/external/{name}/events", external_events, methods=["POST"]),
        Route("/v1/connectors/external/{name}/events/batch", external_batch, methods=["POST"]),
        Route("/v1/connectors/external/{name}/credentials/{key}", external_credentials, methods=["GET", "POST"]),
        Route("/v1/connectors/{kind}/{name}", ingress_root, methods=["POST"]),
    ]
