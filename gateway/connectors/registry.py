"""The connector kinds, one line each, and what is looked up by kind: settings parsing, reply handle checks."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.connectors import base, external, http, slack, telegram
from gateway.connectors.base import ConnectorKind
from gateway.connectors.model import CommonSettings, ReplyHandle, explain
from gateway.errors import NotFoundError, ValidationFailedError

# Adding a kind: its module (settings, adapter, addresses, `KIND`) and one line here. Order is the API's order.
KINDS: dict[str, ConnectorKind] = {
    "telegram": telegram.KIND,
    "slack": slack.KIND,
    "http": http.KIND,
    "external": external.KIND,
}


def kind_of(kind: str) -> ConnectorKind:
    """The registered kind named `kind`; a 404-class error naming the kinds otherwise."""
    found = KINDS.get(kind)
    if found is None:
        raise NotFoundError(f"unknown connector kind {kind!r}; use one of {', '.join(KINDS)}")
    return found


def check_kind(kind: str) -> str:
    """Return `kind` if it is a registered connector kind; raise a 404-class error naming the kinds otherwise."""
    kind_of(kind)
    return kind


def check_reply_handle(h: ReplyHandle, what: str) -> None:
    """Validate a ReplyHandle against the registered kinds (see `base.check_reply_handle`)."""
    base.check_reply_handle(h, what, KINDS)


def parse_settings(kind: str, data: dict[str, Any], *, what: str = "connector") -> CommonSettings:
    """Convert a settings dict (secret fields already as metadata) into the kind's Struct; raise 422 on errors."""
    try:
        settings = msgspec.convert(data, kind_of(kind).settings, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationFailedError(f"{what}: {explain(str(exc))}") from None
    settings.check(what)
    for i, t in enumerate(settings.owner_reply_targets()):
        check_reply_handle(t, f"{what}: reply target {i}")
    return settings
