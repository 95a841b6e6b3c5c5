"""The external kind: its settings, `/events` and `/events/batch` ingress (protocols 1 and 2), sidecar delivery."""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

from actors.connector import Answer, DeliveryRequest, DeliveryResult, Inbound
from gateway.connectors.base import (
    AdapterBase,
    ConnectorKind,
    Context,
    canonical,
    check_bearer,
    fingerprint,
    reply_dicts,
    store_items,
)
from gateway.connectors.model import ENV_RE, SLOT_RE, ChatSettings, SecretMeta, check_url
from gateway.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationFailedError,
)
from storage.ingress import IngressItem, Outcome, SessionSpec

PROTOCOLS = (1, 2)


class ChildProcess(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A sidecar the connector's actor runs (gateway/connectors/sidecar.py)."""

    command: list[str]
    cwd: str | None = None
    env_keys: list[str] = msgspec.field(default_factory=list)
    credential_env_keys: list[str] = msgspec.field(default_factory=list)
    # credential env key -> secret slot; when set, secrets are fetched on demand instead of injected.
    credential_slots: dict[str, str] = msgspec.field(default_factory=dict)
    startup_timeout_seconds: float = 20.0
    credential_ttl_seconds: float = 3600.0
    # GET /health every this many seconds; after this many failed checks in a row (anything but `ready`, and
    # `starting` only once startup_timeout_seconds have passed) the sidecar is restarted; 0: never for health.
    health_interval_seconds: float = 5.0
    max_failed_health_checks: int = 3


class ExternalSettings(ChatSettings, forbid_unknown_fields=True, kw_only=True):
    platform: str = ""
    mode: Literal["ingress", "sidecar"] = "ingress"
    base_url: str | None = None
    shared_token: SecretMeta | None = None
    # Scripts batch-upload at their own pace: no limit unless the operator sets one (as the reference).
    ingress_events_per_second: float | None = None
    # The reference implementation's limit; raise it for scripts that batch more (the benchmark sends 100).
    max_batch_events: int = 64
    child_process: ChildProcess | None = None

    def owner_urls(self) -> list[str]:
        return [] if self.base_url is None else [self.base_url]

    def check(self, what: str) -> None:
        super().check(what)
        check_url(self.base_url, f"{what}: base_url")
        if self.shared_token is None and not self.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: no shared_token is configured; set one or set allow_unauthenticated_ingress=true"
            )
        if not 1 <= self.max_batch_events <= 1000:
            raise ValidationFailedError(f"{what}: max_batch_events must be between 1 and 1000")
        cp = self.child_process
        if cp is None:
            return
        if not cp.command:
            raise ValidationFailedError(f"{what}: child_process.command must name a program")
        if self.base_url is None:
            raise ValidationFailedError(f"{what}: child_process needs base_url (where the sidecar listens)")
        for key in [*cp.env_keys, *cp.credential_env_keys, *cp.credential_slots]:
            if not ENV_RE.match(key):
                raise ValidationFailedError(f"{what}: {key!r} is not an environment variable name")
        if not 0.1 <= cp.health_interval_seconds <= 3600:
            raise ValidationFailedError(f"{what}: child_process.health_interval_seconds must be 0.1-3600")
        if not 0 <= cp.max_failed_health_checks <= 1000:
            raise ValidationFailedError(
                f"{what}: child_process.max_failed_health_checks must be 0-1000 (0: never restart for health)"
            )
        for key, slot in cp.credential_slots.items():
            if key not in cp.credential_env_keys:
                raise ValidationFailedError(f"{what}: credential slot {key!r} is not in credential_env_keys")
            if not SLOT_RE.match(slot):
                raise ValidationFailedError(f"{what}: credential slot {key!r} names an invalid slot")


def check_address(address: str | dict[str, Any], what: str) -> None:
    if not isinstance(address, dict):
        raise ValidationFailedError(f"{what}: an external address is an object (the sidecar's reply route)")


class Thread(msgspec.Struct, kw_only=True, gc=False):
    path: list[str]


class InputItem(msgspec.Struct, kw_only=True, gc=False):
    type: str = "text"
    text: str | None = None


class ExternalEvent(msgspec.Struct, kw_only=True, gc=False):
    event_id: str
    instance_id: str | None = None
    occurred_at_ms: int | None = None
    actor_id: str | None = None
    thread: Thread | None = None
    routing_key: str | None = None
    content: str | None = None
    text: str | None = None  # protocol 1 spelling of `content`
    input_items: list[InputItem] | None = None
    attachments: list[dict[str, Any]] | None = None
    reply_route: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    protocol_version: int | None = None  # single-event requests may carry it


class Batch(msgspec.Struct, kw_only=True):
    events: list[msgspec.Raw]
    protocol_version: int = 2


class _TypedBatch(msgspec.Struct, kw_only=True, gc=False):
    events: list[ExternalEvent]
    protocol_version: int = 2


_event_decoder = msgspec.json.Decoder(ExternalEvent)
_batch_decoder = msgspec.json.Decoder(Batch)
_typed_batch_decoder = msgspec.json.Decoder(_TypedBatch)


def same_event(stored: bytes, new: bytes) -> bool:
    """Whether two payloads are the same event: equal once decoded and encoded canonically (sorted keys).

    Events are fingerprinted from the bytes they came in (no re-encoding per event); this decides when those
    differ, so the same event spelled otherwise (key order, spacing, unknown fields) is still `duplicate`, and so
    are receipts stored before that change (their payload and fingerprint were the canonical encoding).
    """
    try:
        return canonical(_event_decoder.decode(stored)) == canonical(_event_decoder.decode(new))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False


class ExternalConnector(AdapterBase):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        s = ctx.config.settings
        assert isinstance(s, ExternalSettings)
        self.s = s
        self._specs: dict[tuple[str, str | None], SessionSpec] = {}
        # Settings are fixed for the life of the adapter: whether events carry reply targets is known once.
        self._wants_targets = s.include_self_output or bool(s.additional_reply_targets)

    async def background(self) -> None:
        if self.s.child_process is not None:
            from gateway.connectors.sidecar import run_sidecar

            await run_sidecar(self.ctx, self.s, self.http)
        else:
            await super().background()

    async def handle(self, msg: Inbound) -> Answer:
        if msg.action.startswith("credentials"):
            from gateway.connectors.sidecar import credential_answer

            return await credential_answer(self.ctx, msg)
        check_bearer(
            msg.headers,
            self.ctx.secrets.get("shared_token"),
            allow_unauthenticated=self.s.allow_unauthenticated_ingress,
            what=f"external connector {self.name}",
        )
        if msg.action == "events/batch":
            return await self._batch(msg.body)
        if msg.action == "events":
            return await self._single(msg.body)
        raise NotFoundError(f"no such external connector route {msg.action!r}")

    def _item(self, ev: ExternalEvent, raw: bytes | msgspec.Raw) -> IngressItem | Outcome:
        if not ev.event_id or len(ev.event_id) > 256:
            return Outcome("rejected", reason="event_id must be 1-256 characters")
        text = ev.content if ev.content is not None else ev.text
        if ev.input_items:
            parts = [i.text for i in ev.input_items if i.type == "text" and i.text]
            text = "\n".join([text, *parts] if text else parts)
        if not text and not ev.attachments:
            return Outcome("rejected", reason="the event has no content, input_items or attachments")
        path = "/".join(ev.thread.path) if ev.thread is not None and ev.thread.path else ""
        # Events of one thread share one SessionSpec: the hot path builds it once per thread, not per event.
        spec = self._specs.get((path, ev.routing_key))
        if spec is None:
            candidates: list[tuple[str, str]] = []
            if path:
                candidates.append(("path:" + path, ""))
            if ev.routing_key:
                candidates.append(("rk:" + ev.routing_key, ""))
            candidates.extend(("bind:" + k, "") for k in self.s.additional_binding_keys)
            spec = self.session_spec(candidates)
            if len(self._specs) > 10_000:
                self._specs.clear()
            self._specs[(path, ev.routing_key)] = spec
        if spec.fixed_session_id is None and not spec.candidates:
            return Outcome("rejected", reason="cannot derive a session: give thread.path or routing_key")
        targets: list[dict[str, Any]] | None = None
        if self._wants_targets:
            targets = []
            if self.s.include_self_output:
                route = ev.reply_route or {
                    "thread": ev.thread.path if ev.thread else None,
                    "routing_key": ev.routing_key,
                }
                targets.append({"plugin": "external", "connector": self.name, "address": route})
            targets.extend(reply_dicts(self.s.additional_reply_targets, owner_set=True))
        # Stored and fingerprinted as sent: `same_event` decides when a re-sent event's bytes differ.
        return IngressItem(ev.event_id, fingerprint(raw), text or "", raw, spec, targets)

    async def _batch(self, body: bytes) -> Answer:
        try:
            batch = _batch_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ValidationFailedError(f"invalid batch: {exc}") from None
        except msgspec.DecodeError:
            raise InvalidRequestError('the body is not JSON; send {"protocol_version": 2, "events": [...]}') from None
        if len(batch.events) > self.s.max_batch_events:
            raise PayloadTooLargeError(
                f"{len(batch.events)} events in one batch; send at most {self.s.max_batch_events}"
            )
        unsupported = None
        if batch.protocol_version not in PROTOCOLS:
            unsupported = Outcome("rejected", reason=_version_reason(batch.protocol_version))
        ids: list[str | None] = []
        items: list[IngressItem | Outcome] = []
        try:
            # One typed decode for the whole batch; an invalid event anywhere sends it the per-event way below,
            # so that only that event is rejected.
            events: list[ExternalEvent | None] = list(_typed_batch_decoder.decode(body).events)
        except (msgspec.ValidationError, msgspec.DecodeError):
            events = [None] * len(batch.events)
        valid = 0
        for raw, ev in zip(batch.events, events, strict=True):
            if ev is None:
                try:
                    ev = _event_decoder.decode(raw)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    ids.append(_guess_id(raw))
                    items.append(Outcome("rejected", reason=f"invalid event: {exc}"))
                    continue
            ids.append(ev.event_id)
            if unsupported is not None:
                items.append(unsupported)
                continue
            item = self._item(ev, raw)
            valid += isinstance(item, IngressItem)
            items.append(item)
        # The rate limit is charged once for the batch: its first valid events that fit pass, the rest wait.
        allowed, wait = self.take_ingress_batch(valid)
        if allowed < valid:
            limited = Outcome("rejected", reason=f"rate_limited:{math.ceil(wait * 1000)}")
            seen = 0
            for i, item in enumerate(items):
                if isinstance(item, IngressItem):
                    seen += 1
                    if seen > allowed:
                        items[i] = limited
        if allowed:
            outcomes = await store_items(self.ctx, items, same_payload=same_event)
        else:
            outcomes = [i for i in items if isinstance(i, Outcome)]
        # An accepted or duplicate event (no reason) is the common case: its result is built inline.
        results = [
            _Result(eid, o.status, o.session_id) if o.reason is None else _result(eid, o)
            for eid, o in zip(ids, outcomes, strict=True)
        ]
        return Answer(200, _Results(batch.protocol_version, results))

    async def _single(self, body: bytes) -> Answer:
        try:
            ev = _event_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ValidationFailedError(f"invalid event: {exc}") from None
        except msgspec.DecodeError:
            raise InvalidRequestError("the body is not JSON; send one event object") from None
        version = ev.protocol_version or 2
        if version not in PROTOCOLS:
            raise ValidationFailedError(_version_reason(version))
        item = self._item(ev, body)
        if isinstance(item, Outcome):
            raise ValidationFailedError(item.reason or "rejected", details={"event_id": ev.event_id})
        self.check_ingress_rate()
        (o,) = await store_items(self.ctx, [item], same_payload=same_event)
        if o.status == "rejected":
            raise ConflictError(o.reason or "rejected", details={"event_id": ev.event_id, "status": "rejected"})
        return Answer(200, _result(ev.event_id, o))

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        if not self.s.base_url:
            return DeliveryResult("terminal", "external connector has no base_url to deliver to")
        headers = {"Idempotency-Key": request.delivery_id}
        token = self.ctx.secrets.get("shared_token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = {
            "protocol_version": 1,
            "delivery_id": request.delivery_id,
            "session_id": request.session_id,
            "turn_id": request.turn_id,
            "route": request.target.get("address"),
            "text": request.text,
        }
        import httpx  # loaded with the adapter's client (see AdapterBase); bound here for the except clause

        try:
            r = await self.http.post(self.s.base_url.rstrip("/") + "/deliver", json=body, headers=headers)
        except httpx.HTTPError as exc:
            return DeliveryResult("retryable", f"{type(exc).__name__}: cannot reach the sidecar")
        status = ""
        try:
            status = str(r.json().get("status", ""))
        except ValueError:
            pass
        if r.status_code < 300 and status in ("committed", ""):
            return DeliveryResult("delivered")
        if status == "terminal_error" or (400 <= r.status_code < 500 and r.status_code != 429):
            return DeliveryResult("terminal", f"sidecar answered HTTP {r.status_code} {status}".strip())
        return DeliveryResult("retryable", f"sidecar answered HTTP {r.status_code} {status}".strip())


def _version_reason(version: int) -> str:
    return f"unsupported protocol_version {version}; this gateway speaks {' and '.join(map(str, PROTOCOLS))}"


def _guess_id(raw: msgspec.Raw) -> str | None:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    value = obj.get("event_id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


class _Result(msgspec.Struct, omit_defaults=True, gc=False):
    """One event's result as answered (`views.EventResult`): a Struct, which msgspec builds and encodes faster
    than a dict; the fields left at None are not written, so the keys are those of the documented shapes."""

    event_id: str | None
    status: str
    session_id: str | None = None
    reason: str | None = None
    retry_after_ms: int | None = None


class _Results(msgspec.Struct, gc=False):
    protocol_version: int
    results: list[_Result]


def _result(event_id: str | None, o: Outcome) -> _Result:
    if o.reason and o.reason.startswith("rate_limited:"):
        return _Result(event_id, "rate_limited", retry_after_ms=int(o.reason.split(":", 1)[1]))
    return _Result(event_id, o.status, o.session_id, o.reason)


# No chat addresses: a reply goes to the route the event named (`reply_route`), which only the sidecar understands.
KIND = ConnectorKind(
    name="external",
    settings=ExternalSettings,
    adapter=ExternalConnector,
    check_address=check_address,
    root_ingress=False,
)
