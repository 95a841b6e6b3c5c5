"""The wire types of the connector REST routes, derived from the settings Structs so OpenAPI cannot drift from them."""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec.structs import fields

from gateway.connectors.base import ConnectorKind
from gateway.connectors.model import SLOT_RE, ReplyHandle, SecretInput
from gateway.connectors.registry import KINDS
from storage.outbox import STATES

DeliveryState = Literal["pending", "delivered", "dead_letter"]
assert get_args(DeliveryState) == STATES, "storage.outbox.STATES changed: change DeliveryState with it"
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class SecretView(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A secret field as a view shows it: where the value comes from and whether it resolves, never the value."""

    configured: bool
    source: Literal["value", "secret_ref", "env"] | None
    secret_ref: str | None
    env: str | None


def _view_type(kind: ConnectorKind) -> type[Any]:
    """`{kind, name, source, <every settings field>}` with each secret field as a SecretView (see `service._view`)."""
    secret = kind.secret_fields
    body = [(f.name, SecretView if f.name in secret else f.type) for f in fields(kind.settings)]
    return msgspec.defstruct(
        f"{kind.name.capitalize()}ConnectorView",
        [("name", str), ("source", Literal["file", "daemon"]), *body],
        tag_field="kind",
        tag=kind.name,
        forbid_unknown_fields=True,
        kw_only=True,
    )


def _input_type(kind: ConnectorKind) -> type[Any]:
    """A PUT body: any subset of the kind's fields (a field-aware merge); a secret field takes a SecretInput or null."""
    secret = kind.secret_fields
    body = [
        (f.name, (SecretInput | None if f.name in secret else f.type) | msgspec.UnsetType, msgspec.UNSET)
        for f in fields(kind.settings)
    ]
    return msgspec.defstruct(f"{kind.name.capitalize()}ConnectorFields", body, forbid_unknown_fields=True, kw_only=True)


# Documentation (OpenAPI) of the kinds registered when the routes are: one view and one PUT body per kind.
VIEWS: dict[str, type[Any]] = {name: _view_type(k) for name, k in KINDS.items()}
INPUTS: tuple[type[Any], ...] = tuple(_input_type(k) for k in KINDS.values())
ConnectorView: Any = reduce(or_, VIEWS.values())
KindName: Any = Literal[tuple(KINDS)]
RootIngressKind: Any = Literal[tuple(name for name, k in KINDS.items() if k.root_ingress)]


class ConnectorPath(msgspec.Struct):
    kind: KindName
    name: str


class IngressPath(msgspec.Struct):
    # The kinds with `root_ingress`; external connectors take events on `/events` and `/events/batch` instead.
    kind: RootIngressKind
    name: str


class ConnectorList(msgspec.Struct):
    connectors: list[ConnectorView]


class KindView(msgspec.Struct, kw_only=True):
    """A registered connector kind, as the web UI's editor needs it."""

    kind: str
    fields: list[str]  # every settings field, secret ones included
    secret_fields: list[str]  # write-only: PUT takes a SecretInput, views show a SecretView
    root_ingress: bool  # takes events on POST /v1/connectors/{kind}/{name}
    chat_addresses: bool  # a chat of it replies into itself (/api/message, cron jobs)


class KindList(msgspec.Struct):
    kinds: list[KindView]


def kind_views() -> KindList:
    """Every registered kind, in the registry's order."""
    return KindList(
        [
            KindView(
                kind=name,
                fields=list(k.settings.__struct_fields__),
                secret_fields=list(k.secret_fields),
                root_ingress=k.root_ingress,
                chat_addresses=k.chat_address is not None,
            )
            for name, k in KINDS.items()
        ]
    )


class SecretSlot(msgspec.Struct):
    slot: str
    configured: bool
    updated_at: int  # epoch milliseconds


class SecretList(msgspec.Struct):
    secrets: list[SecretSlot]


class SlotPath(msgspec.Struct):
    slot: Annotated[str, msgspec.Meta(pattern=SLOT_RE.pattern)]


class SecretValue(msgspec.Struct, forbid_unknown_fields=True):
    value: NonEmpty


class SecretStored(msgspec.Struct):
    slot: str
    configured: bool
    restarted: list[str]  # the connectors that read this slot, restarted so the new value applies


class PersonaBody(msgspec.Struct):
    name: NonEmpty


class Persona(msgspec.Struct):
    id: str
    name: str


class ReplyTargets(msgspec.Struct):
    session_id: str
    reply_targets: list[ReplyHandle]


class OutboxQuery(msgspec.Struct, kw_only=True):
    state: DeliveryState | None = None
    session_id: str | None = None


class Delivery(msgspec.Struct, kw_only=True):
    """One planned delivery as `storage.outbox.Delivery.view` shows it."""

    delivery_id: str
    session_id: str
    turn_id: str
    plugin: str
    connector: str
    state: DeliveryState
    attempts: int
    next_attempt_at: int
    last_error: str | None
    created_at: int
    updated_at: int


class DeliveryList(msgspec.Struct):
    deliveries: list[Delivery]


class Retried(msgspec.Struct):
    delivery_id: str
    state: Literal["pending"]


class HttpAccepted(msgspec.Struct):
    """What an http connector answers (202): the event is stored and a turn will run in `session_id`."""

    status: str
    session_id: str | None
    idempotency_key: str | None


class EventResult(msgspec.Struct, kw_only=True):
    """One external event's outcome (`external._result`): accepted, duplicate, rejected or rate_limited."""

    event_id: str | None
    status: str
    session_id: str | None = None
    reason: str | None = None
    retry_after_ms: int | None = None


class BatchResults(msgspec.Struct):
    protocol_version: int
    results: list[EventResult]


class Credential(msgspec.Struct):
    key: str
    value: str
