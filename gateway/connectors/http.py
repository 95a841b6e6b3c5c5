"""The http kind: its settings, `POST /v1/connectors/http/{name}` ingress with Bearer auth, replies POSTed to a URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from actors.connector import Answer, DeliveryRequest, DeliveryResult, Inbound
from gateway.connectors.base import (
    AdapterBase,
    ConnectorKind,
    Context,
    canonical,
    check_bearer,
    check_reply_handle,
    fingerprint,
    reply_dicts,
    store_items,
)
from gateway.connectors.model import CommonSettings, ReplyHandle, SecretMeta, check_url
from gateway.errors import ConflictError, InvalidRequestError, ValidationFailedError
from gateway.outbound import OutboundRefusedError
from storage.ids import new_id
from storage.ingress import IngressItem, SessionSpec

if TYPE_CHECKING:
    import httpx


class HttpSettings(CommonSettings, forbid_unknown_fields=True, kw_only=True):
    actor_id: str | None = None
    bearer_token: SecretMeta | None = None
    default_reply_targets: list[ReplyHandle] = msgspec.field(default_factory=list)
    default_binding_keys: list[str] = msgspec.field(default_factory=list)

    def owner_reply_targets(self) -> list[ReplyHandle]:
        return self.default_reply_targets

    def check(self, what: str) -> None:
        super().check(what)
        if self.bearer_token is None and not self.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: no bearer_token is configured; set one or set allow_unauthenticated_ingress=true"
            )


def check_address(address: str | dict[str, Any], what: str) -> None:
    url = address if isinstance(address, str) else address.get("url")
    if not isinstance(url, str):
        raise ValidationFailedError(f'{what}: an http address is a URL or {{"url": ...}}')
    check_url(url, f"{what}.address")


class InputItem(msgspec.Struct, kw_only=True):
    type: str = "text"
    text: str | None = None


class HttpIngress(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    session_id: str | None = None
    binding_keys: list[str] | None = None
    actor_id: str | None = None
    content: str | None = None
    input_items: list[InputItem] | None = None
    attachments: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    reply_targets: list[ReplyHandle] | None = None
    reply_plugin: str | None = None  # a registered kind, checked with the handle it makes
    reply_address: str | dict[str, Any] | None = None
    idempotency_key: str | None = None


_decoder = msgspec.json.Decoder(HttpIngress)


class HttpConnector(AdapterBase):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        s = ctx.config.settings
        assert isinstance(s, HttpSettings)
        self.s = s

    async def handle(self, msg: Inbound) -> Answer:
        check_bearer(
            msg.headers,
            self.ctx.secrets.get("bearer_token"),
            allow_unauthenticated=self.s.allow_unauthenticated_ingress,
            what=f"http connector {self.name}",
        )
        self.check_ingress_rate()
        try:
            req = _decoder.decode(msg.body)
        except msgspec.ValidationError as exc:
            raise ValidationFailedError(f"invalid request: {exc}") from None
        except msgspec.DecodeError:
            raise InvalidRequestError("the body is not JSON") from None
        text = req.content or ""
        if req.input_items:
            parts = [i.text for i in req.input_items if i.type == "text" and i.text]
            text = "\n".join([text, *parts] if text else parts)
        if not text and not req.attachments:
            raise ValidationFailedError("give content, input_items or attachments")
        targets = self._targets(req)
        keys = req.binding_keys if req.binding_keys else self.s.default_binding_keys
        # Resolution order: fixed_session_id, payload session_id, a session bound to a key, the first key.
        spec = SessionSpec(
            candidates=tuple((self.ctx.transport, "bind:" + k, "") for k in keys if k),
            fixed_session_id=self.s.fixed_session_id,
            session_id=req.session_id if not self.s.fixed_session_id else None,
            create_if_missing=self.s.session_policy.create_if_missing,
            transport=self.ctx.transport,
        )
        if not spec.fixed_session_id and not spec.session_id and not spec.candidates:
            raise ValidationFailedError("cannot choose a session: give session_id or binding_keys")
        key = req.idempotency_key or msg.headers.get("idempotency-key")
        payload = canonical(req)
        # Without a key every request is a new event: content alone cannot tell a retry from a repeat.
        item = IngressItem(key or "auto:" + new_id(), fingerprint(payload), text, payload, spec, targets or None)
        (o,) = await store_items(self.ctx, [item])
        if o.status == "rejected":
            if o.reason and "different payload" in o.reason:
                raise ConflictError(o.reason, details={"status": "rejected"})
            raise ValidationFailedError(o.reason or "rejected", details={"status": "rejected"})
        return Answer(202, {"status": o.status, "session_id": o.session_id, "idempotency_key": key})

    def _targets(self, req: HttpIngress) -> list[dict[str, Any]]:
        handles: list[ReplyHandle] = []
        if req.reply_targets is not None:
            handles = list(req.reply_targets)
        elif req.reply_plugin is not None and req.reply_address is not None:
            handles = [ReplyHandle(plugin=req.reply_plugin, connector=self.name, address=req.reply_address)]
        else:
            return reply_dicts(self.s.default_reply_targets, owner_set=True)
        for i, h in enumerate(handles):
            check_reply_handle(h, f"reply target {i}", self.ctx.kinds)
        # Named by the sender (who may hold no more than this connector's bearer token, or nothing at all when it
        # allows unauthenticated ingress): the outbound policy keeps these URLs off private addresses.
        return reply_dicts(handles, owner_set=False)

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        url = reply_url(request.target)
        if url is None:
            return DeliveryResult("terminal", "the reply target has no URL")
        return await post_reply(self.client_for(request.target, url), url, request)


def reply_url(target: dict[str, Any]) -> str | None:
    a = target.get("address")
    url = a if isinstance(a, str) else (a or {}).get("url")
    return url if isinstance(url, str) else None


async def post_reply(client: httpx.AsyncClient, url: str, request: DeliveryRequest) -> DeliveryResult:
    """POST the final text to an http ReplyHandle's URL with the delivery id as Idempotency-Key."""
    import httpx  # the client's own module, loaded with it (see AdapterBase): bound here for the except clause

    body = {
        "delivery_id": request.delivery_id,
        "session_id": request.session_id,
        "turn_id": request.turn_id,
        "text": request.text,
    }
    try:
        r = await client.post(url, json=body, headers={"Idempotency-Key": request.delivery_id})
    except OutboundRefusedError as exc:
        return DeliveryResult("terminal", str(exc))  # retrying cannot help: the address stays refused
    except httpx.HTTPError as exc:
        return DeliveryResult("retryable", f"{type(exc).__name__} posting to the reply URL")
    if r.status_code < 300:
        return DeliveryResult("delivered")
    if r.status_code == 429 or r.status_code >= 500 or r.status_code == 408:
        retry = r.headers.get("retry-after", "")
        return DeliveryResult(
            "retryable", f"reply URL answered HTTP {r.status_code}", float(retry) if retry.isdigit() else None
        )
    return DeliveryResult("terminal", f"reply URL answered HTTP {r.status_code}")


KIND = ConnectorKind(name="http", settings=HttpSettings, adapter=HttpConnector, check_address=check_address)
