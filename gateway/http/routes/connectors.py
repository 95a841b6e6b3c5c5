"""Connector HTTP routes: runtime CRUD, secrets, personas, reply targets, the outbox, and every ingress route."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from actors.base import AskTimeoutError, BusyError, DeadActorError, ask
from actors.connector import Answer, Inbound
from gateway.connectors.base import reply_dicts
from gateway.connectors.external import Batch, ExternalEvent
from gateway.connectors.http import HttpIngress
from gateway.connectors.model import SLOT_RE, ReplyHandle
from gateway.connectors.registry import KINDS, check_kind, check_reply_handle
from gateway.connectors.service import ConnectorService
from gateway.connectors.views import (
    INPUTS,
    BatchResults,
    ConnectorList,
    ConnectorPath,
    ConnectorView,
    Credential,
    DeliveryList,
    EventResult,
    HttpAccepted,
    IngressPath,
    KindList,
    OutboxQuery,
    Persona,
    PersonaBody,
    ReplyTargets,
    Retried,
    SecretList,
    SecretSlot,
    SecretStored,
    SecretValue,
    SlotPath,
    kind_views,
)
from gateway.errors import (
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    ValidationFailedError,
)
from gateway.http.api import Ctx, endpoint, runtime_of
from gateway.http.jsondepth import check_depth
from gateway.http.responses import JSON
from storage import connectors as conn_db
from storage import outbox as outbox_db
from storage import secrets as secret_db
from storage import sessions as sess_db
from storage.clock import now_ms


def service_of(request: Request) -> ConnectorService:
    svc = runtime_of(request).connectors
    if svc is None:
        raise UnavailableError("the connector service is not running")
    assert isinstance(svc, ConnectorService)
    return svc


async def json_body(request: Request) -> Any:
    body = await request.body()  # within `server.max_body_bytes`, like every body (asgi.BodyLimit)
    check_depth(body)
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidRequestError("the body is not valid JSON") from None


class ReplyTargetsBody(msgspec.Struct, forbid_unknown_fields=True):
    reply_targets: list[ReplyHandle]


# ---- runtime CRUD (the gateway token) ----
# Bodies are read by `json_body` (its own limit and messages) and checked by the service's field-aware merge;
# the types named in `body=` are what that merge accepts, derived from the settings Structs (gateway/connectors/views).


@endpoint("GET", "/v1/runtime/connectors", summary="List every connector (file and daemon), secrets redacted",
          tag="connectors", auth="token", group=None, response=ConnectorList, errors=(503,))  # fmt: skip
async def list_connectors(ctx: Ctx) -> Response:
    return JSON({"connectors": await service_of(ctx.request).list_views()})


@endpoint("GET", "/v1/runtime/connector-kinds",
          summary="The registered connector kinds: their settings fields, secret fields and ingress",
          tag="connectors", auth="token", group=None, response=KindList)  # fmt: skip
async def list_kinds(ctx: Ctx) -> KindList:
    return kind_views()


@endpoint("GET", "/v1/runtime/connectors/{kind}/{name}", summary="One connector's view, secrets redacted",
          tag="connectors", auth="token", group=None, params=ConnectorPath, response=ConnectorView,
          errors=(404, 503))  # fmt: skip
async def get_connector(ctx: Ctx) -> Response:
    return JSON(await service_of(ctx.request).view(ctx.path("kind"), ctx.path("name")))


@endpoint("PUT", "/v1/runtime/connectors/{kind}/{name}",
          summary="Create a connector (201) or update only the fields sent (200); see docs/connectors.md",
          tag="connectors", auth="token", group=None, params=ConnectorPath, body=INPUTS, validate=False,
          response=ConnectorView, also={201: ConnectorView}, errors=(404, 409, 413, 422, 503))  # fmt: skip
async def put_connector(ctx: Ctx) -> Response:
    kind = check_kind(ctx.path("kind"))
    view, created = await service_of(ctx.request).put(kind, ctx.path("name"), await json_body(ctx.request))
    return JSON(view, status_code=201 if created else 200)


@endpoint("DELETE", "/v1/runtime/connectors/{kind}/{name}",
          summary="Delete a daemon connector (409 while cron jobs or reply targets reference it)",
          tag="connectors", auth="token", group=None, params=ConnectorPath, status=204,
          errors=(404, 409, 503))  # fmt: skip
async def delete_connector(ctx: Ctx) -> Response:
    await service_of(ctx.request).delete(ctx.path("kind"), ctx.path("name"))
    return Response(status_code=204)


# ---- secrets and personas (the gateway token) ----


@endpoint("GET", "/v1/runtime/secrets", summary="List the secret slots (never their values)", tag="connectors",
          auth="token", group=None, response=SecretList, errors=(503,))  # fmt: skip
async def list_secrets(ctx: Ctx) -> SecretList:
    slots = await service_of(ctx.request).store.call(secret_db.list_slots)
    return SecretList([SecretSlot(s, True, t) for s, t in slots])


@endpoint("PUT", "/v1/runtime/secrets/{slot:path}",
          summary="Store or rotate a secret slot; the connectors reading it restart", tag="connectors",
          auth="token", group=None, params=SlotPath, body=SecretValue, validate=False, response=SecretStored,
          errors=(413, 422, 503))  # fmt: skip
async def put_secret(ctx: Ctx) -> SecretStored:
    slot = ctx.path("slot")
    if not SLOT_RE.match(slot):
        raise ValidationFailedError("invalid slot name: use letters, digits and _./:-")
    try:
        body = msgspec.convert(await json_body(ctx.request), SecretValue, strict=True)
    except msgspec.ValidationError:
        # msgspec's message could quote the value: say only what is expected.
        raise ValidationFailedError('send {"value": "<secret>"} with a non-empty string') from None
    restarted = await service_of(ctx.request).put_secret(slot, body.value)
    return SecretStored(slot, True, restarted)


@endpoint("PUT", "/v1/runtime/personas/{persona_id}", summary="Create or rename a persona", tag="connectors",
          auth="token", group=None, body=PersonaBody, validate=False, response=Persona,
          errors=(413, 422, 503))  # fmt: skip
async def put_persona(ctx: Ctx) -> Persona:
    pid = ctx.path("persona_id")
    try:
        body = msgspec.convert(await json_body(ctx.request), PersonaBody, strict=True)
    except msgspec.ValidationError:
        raise ValidationFailedError('send {"name": "<persona name>"}') from None
    await service_of(ctx.request).store.call(conn_db.put_persona, pid, body.name)
    return Persona(pid, body.name)


# ---- reply targets (the gateway token) ----


async def _session_id(ctx: Ctx) -> str:
    """The path's session, by id or key (`telegram:bot:42`); 404 when there is none."""
    ref = ctx.path("session_id")
    row = await service_of(ctx.request).store.call(sess_db.find_by_ref, ref)
    if row is None:
        raise NotFoundError(f"no session {ref}", code="SESSION_NOT_FOUND")
    return row.id


@endpoint("GET", "/v1/sessions/{session_id}/reply-targets", summary="Where a session's replies are delivered",
          tag="connectors", auth="token", group=None, response=ReplyTargets, errors=(404, 503))  # fmt: skip
async def get_reply_targets(ctx: Ctx) -> Response:
    sid = await _session_id(ctx)
    targets = await service_of(ctx.request).store.call(conn_db.get_reply_targets, sid)
    return JSON({"session_id": sid, "reply_targets": _handles(targets or [])})


def _handles(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The `owner_set` mark is the outbound policy's business (gateway/connectors/base.py), not part of a ReplyHandle.
    return [{k: v for k, v in t.items() if k != "owner_set"} for t in targets]


@endpoint("PUT", "/v1/sessions/{session_id}/reply-targets",
          summary="Replace a session's reply targets (kept over later ingress events until DELETE)",
          tag="connectors", auth="token", group=None, body=ReplyTargetsBody, validate=False,
          response=ReplyTargets, errors=(404, 413, 422, 503))  # fmt: skip
async def put_reply_targets(ctx: Ctx) -> Response:
    service = service_of(ctx.request)
    try:
        body = msgspec.convert(await json_body(ctx.request), ReplyTargetsBody, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationFailedError(f"invalid reply targets: {exc}") from None
    for i, h in enumerate(body.reply_targets):
        check_reply_handle(h, f"reply target {i}")
        if service.config_of(f"{h.plugin}/{h.connector}") is None:
            # Accepted, it would dead-letter every reply: say so now (GET /v1/runtime/connectors lists them).
            raise ValidationFailedError(
                f"reply target {i}: no {h.plugin} connector named {h.connector!r} is configured",
                details=[{"loc": ["body", "reply_targets", i, "connector"], "message": "no such connector"}],
            )
    targets = reply_dicts(body.reply_targets, owner_set=True)  # this route takes the gateway token only
    ref = ctx.path("session_id")

    def txn(conn: Any) -> str | None:
        row = sess_db.find_by_ref(conn, ref)
        if row is not None:
            conn_db.set_reply_targets(conn, row.id, targets, now_ms=now_ms(), by_operator=True)
        return None if row is None else row.id

    sid = await service.store.call(txn)
    if sid is None:
        raise NotFoundError(f"no session {ref}", code="SESSION_NOT_FOUND")
    return JSON({"session_id": sid, "reply_targets": _handles(targets)})


@endpoint("DELETE", "/v1/sessions/{session_id}/reply-targets",
          summary="Forget a session's reply targets: the next ingress event sets them again",
          tag="connectors", auth="token", group=None, status=204, errors=(404, 503))  # fmt: skip
async def delete_reply_targets(ctx: Ctx) -> Response:
    sid = await _session_id(ctx)
    await service_of(ctx.request).store.call(conn_db.release_reply_targets, sid)
    return Response(status_code=204)


# ---- outbox (the gateway token) ----


@endpoint("GET", "/v1/runtime/outbox", summary="List planned deliveries, by state and session", tag="connectors",
          auth="token", group=None, query=OutboxQuery, validate=False, response=DeliveryList,
          errors=(422, 503))  # fmt: skip
async def list_outbox(ctx: Ctx) -> Response:
    q = ctx.request.query_params
    try:
        query = msgspec.convert({k: q[k] for k in ("state", "session_id") if k in q}, OutboxQuery)
    except msgspec.ValidationError:
        raise ValidationFailedError(f"state must be one of {', '.join(outbox_db.STATES)}") from None
    rows = await service_of(ctx.request).store.call(
        outbox_db.list_deliveries, state=query.state, session_id=query.session_id
    )
    return JSON({"deliveries": [d.view() for d in rows]})


@endpoint("POST", "/v1/runtime/outbox/{delivery_id}/retry", summary="Retry a dead-lettered delivery",
          tag="connectors", auth="token", group=None, response=Retried, errors=(404, 503))  # fmt: skip
async def retry_delivery(ctx: Ctx) -> Retried:
    svc = service_of(ctx.request)
    did = ctx.path("delivery_id")
    if not await svc.store.call(outbox_db.retry_dead_letter, did, now_ms=now_ms()):
        raise NotFoundError(f"no dead-lettered delivery {did}")
    if svc.outbox_address is not None:
        from actors.outbox import send_kick

        send_kick(svc.outbox_address)
    return Retried(did, "pending")


# ---- ingress (each connector's own authentication, over the raw body) ----
# `auth="connector"`: the gateway token plays no part; the connector checks its Bearer shared token, Slack signature
# or Telegram secret header. The documented bodies are the Structs the connectors decode them with.


async def _ingress(request: Request, kind: str, action: str) -> Response:
    svc = service_of(request)
    name = request.path_params["name"]
    if svc.config_of(f"{kind}/{name}") is None:
        raise NotFoundError(f"no {kind} connector named {name!r}")
    body = await request.body()  # within `server.max_body_bytes`, like every body (asgi.BodyLimit)
    return await ask_connector(svc, kind, name, action, {k.lower(): v for k, v in request.headers.items()}, body)


async def ask_connector(
    svc: ConnectorService, kind: str, name: str, action: str, headers: dict[str, str], body: bytes
) -> Response:
    """Hand one ingress request (its body read whole) to connector `kind/name`'s actor and render its answer.

    Shared by the routes here and `gateway.http.ingress`, which serves external events ahead of the app."""
    ref = f"{kind}/{name}"
    if svc.config_of(ref) is None:
        raise NotFoundError(f"no {kind} connector named {name!r}")
    address = svc.actors.address_of(ref)
    if address is None:
        raise UnavailableError(f"connector {ref} is not running; see /api/status", headers={"Retry-After": "5"})
    check_depth(body)  # every connector's body is JSON: bounded here, before any of them parses it
    try:
        answer: Answer = await ask(address, lambda r: Inbound(action, headers, body, r), timeout=60)
    except BusyError:
        raise UnavailableError(f"connector {ref} is busy; retry shortly", headers={"Retry-After": "1"}) from None
    except AskTimeoutError:
        # Withdrawn before the connector took it: it never runs, nothing of it is stored.
        raise UnavailableError(f"connector {ref} did not answer; retry", headers={"Retry-After": "5"}) from None
    except DeadActorError:
        message = f"connector {ref} restarted while answering; retry (events it had stored answer `duplicate`)"
        raise UnavailableError(message, headers={"Retry-After": "5"}) from None
    if answer.media_type == "application/json":
        return JSON(answer.body, status_code=answer.status, headers=answer.headers, redact=answer.redact)
    return Response(answer.body, status_code=answer.status, headers=answer.headers, media_type=answer.media_type)


_INGRESS_ERRORS = (401, 404, 409, 413, 422, 429, 503)


@endpoint("POST", "/v1/connectors/{kind}/{name}",
          summary="Ingress of an http (202, HttpIngress body), slack (Events API) or telegram (Update) connector",
          tag="connector ingress", auth="connector", group=None, params=IngressPath, body=HttpIngress,
          validate=False, also={202: HttpAccepted}, errors=_INGRESS_ERRORS)  # fmt: skip
async def ingress_root(ctx: Ctx) -> Response:
    kind = ctx.path("kind")
    found = KINDS.get(kind)
    if found is None or not found.root_ingress:
        raise NotFoundError(f"no ingress route for {kind!r} connectors here; external ones use /events")
    return await _ingress(ctx.request, kind, "")


@endpoint("POST", "/v1/connectors/external/{name}/events", summary="One event for an external connector",
          tag="connector ingress", auth="connector", group=None, body=ExternalEvent, validate=False,
          example={"event_id": "evt-1", "routing_key": "chat-1", "content": "hello", "protocol_version": 2},
          response=EventResult, errors=_INGRESS_ERRORS)  # fmt: skip
async def external_events(ctx: Ctx) -> Response:
    return await _ingress(ctx.request, "external", "events")


@endpoint("POST", "/v1/connectors/external/{name}/events/batch", summary="A batch of events (per-event results)",
          tag="connector ingress", auth="connector", group=None, body=Batch, validate=False,
          example={"protocol_version": 2, "events": [{"event_id": "e2", "thread": {"path": ["a"]}, "content": "hi"}]},
          response=BatchResults, errors=_INGRESS_ERRORS)  # fmt: skip
async def external_batch(ctx: Ctx) -> Response:
    return await _ingress(ctx.request, "external", "events/batch")


@endpoint("GET", "/v1/connectors/external/{name}/credentials/{key}",
          summary="A sidecar fetches one secret its short-lived token grants (Cache-Control: no-store)",
          tag="connector ingress", auth="connector", group=None, response=Credential,
          errors=(401, 403, 404, 413, 503))  # fmt: skip
@endpoint("POST", "/v1/connectors/external/{name}/credentials/{key}", summary="The same as GET",
          tag="connector ingress", auth="connector", group=None, response=Credential,
          errors=(401, 403, 404, 413, 503))  # fmt: skip
async def external_credentials(ctx: Ctx) -> Response:
    return await _ingress(ctx.request, "external", "credentials/" + ctx.path("key"))
