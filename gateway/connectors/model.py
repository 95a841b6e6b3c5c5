"""What every connector kind's settings share: secret metadata, reply handles, the common fields and their checks."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import ValidationFailedError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SLOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,127}$")


class SecretInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """ConnectorSecretInput: write-only; `env` cannot be combined with `value` or `secret_ref`."""

    value: str | None = None
    secret_ref: str | None = None
    env: str | None = None


class SecretMeta(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What is stored about a secret field: where its value comes from, never the value."""

    source: Literal["value", "secret_ref", "env"]
    secret_ref: str | None = None
    env: str | None = None


class SessionPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    create_if_missing: bool = True
    persona_id: str | None = None
    capability_scope: list[str] | None = None
    credential_scope: list[str] | None = None


class ReplyHandle(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where a turn's final output goes: a plugin (connector kind), the connector's name and an address.

    `plugin` is checked against the registered kinds (`registry.check_reply_handle`), which also check the address.
    """

    plugin: Annotated[str, msgspec.Meta(description="a registered connector kind (GET /v1/runtime/connector-kinds)")]
    connector: str
    address: str | dict[str, Any]


# Ingress requests a second per http, slack or telegram connector (a token bucket, burst one second's worth). Far
# above real traffic: Slack sends a workspace at most 30,000 events an hour (~8/s), and both platforms retry a 429.
DEFAULT_INGRESS_RATE = 50.0
MAX_INGRESS_RATE = 100_000.0


class CommonSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields every kind has. A kind's settings Struct subclasses this (or `ChatSettings`) and overrides
    `check` for the rules types alone cannot say, calling `super().check(what)` first."""

    allow_unauthenticated_ingress: bool = False
    ingress_events_per_second: float | None = DEFAULT_INGRESS_RATE  # null: no limit
    fixed_session_id: str | None = None
    session_policy: SessionPolicy = msgspec.field(default_factory=SessionPolicy)

    def owner_reply_targets(self) -> list[ReplyHandle]:
        """The reply targets the owner set in these settings (checked as ReplyHandles; they block a deletion)."""
        return []

    def owner_urls(self) -> list[str]:
        """The platform's base URLs these settings name: the owner set them, so they may be private addresses."""
        return []

    def check(self, what: str) -> None:
        """Raise 422 (naming `what` and the field) when the settings break a rule; the kind adds its own."""
        if self.fixed_session_id is not None and not self.fixed_session_id.strip():
            raise ValidationFailedError(f"{what}: fixed_session_id must not be empty")
        rate = self.ingress_events_per_second
        if rate is not None and not 0 < rate <= MAX_INGRESS_RATE:
            raise ValidationFailedError(
                f"{what}: ingress_events_per_second must be > 0 and at most {MAX_INGRESS_RATE:g} (or null for no limit)"
            )
        if self.session_policy.persona_id is not None and not self.session_policy.persona_id:
            raise ValidationFailedError(f"{what}: session_policy.persona_id must not be empty")


class ChatSettings(CommonSettings, forbid_unknown_fields=True, kw_only=True):
    """A chat platform's connector: it may answer into the chat an event came from, and to more targets."""

    include_self_output: bool = False
    additional_reply_targets: list[ReplyHandle] = msgspec.field(default_factory=list)
    additional_binding_keys: list[str] = msgspec.field(default_factory=list)

    def owner_reply_targets(self) -> list[ReplyHandle]:
        return self.additional_reply_targets


class ConnectorConfig(msgspec.Struct, frozen=True):
    """One connector as the runtime sees it: validated settings plus where it came from."""

    kind: str
    name: str
    source: Literal["file", "daemon"]
    settings: CommonSettings
    # File-declared `{value = "..."}` secrets are kept in memory only, never written to the database.
    file_secrets: dict[str, str] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        # The file's secrets stay out of every repr (a log line, a traceback's locals).
        shown = f"kind={self.kind!r}, name={self.name!r}, source={self.source!r}, settings={self.settings!r}"
        return f"ConnectorConfig({shown})"

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValidationFailedError(
            f"invalid connector name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def check_url(value: str | None, what: str) -> None:
    """Raise 422 unless `value` (when set) is an http:// or https:// URL."""
    if value is not None and not re.match(r"^https?://[^\s/]+", value):
        raise ValidationFailedError(f"{what} must be an http:// or https:// URL")


def explain(message: str) -> str:
    """A msgspec validation message with its `$.path` said as the field."""
    if " - at `$." in message:
        msg, where = message.split(" - at `$.", 1)
        return f"field {where.rstrip('`')}: {msg}"
    return message


def check_secret_input(field_name: str, value: Any) -> SecretInput | None:
    """Decode one secret field of a request; None means "remove it". Raise 422 naming the field, never the value."""
    if value is None:
        return None
    try:
        si = msgspec.convert(value, SecretInput, strict=True)
    except msgspec.ValidationError:
        # The message might echo the value; say only what shape is expected.
        raise ValidationFailedError(
            f"field {field_name}: expected an object with one of value, secret_ref or env"
        ) from None
    if si.env is not None and (si.value is not None or si.secret_ref is not None):
        raise ValidationFailedError(f"field {field_name}: env cannot be combined with value or secret_ref")
    if si.env is None and si.value is None and si.secret_ref is None:
        raise ValidationFailedError(f"field {field_name}: give one of value, secret_ref or env")
    if si.env is not None and not ENV_RE.match(si.env):
        raise ValidationFailedError(f"field {field_name}: env must be an environment variable name")
    if si.secret_ref is not None and not SLOT_RE.match(si.secret_ref):
        raise ValidationFailedError(f"field {field_name}: secret_ref must be a slot name (letters, digits, _./:-)")
    if si.value is not None and not si.value:
        raise ValidationFailedError(f"field {field_name}: value must not be empty")
    return si


def default_slot(kind: str, name: str, field_name: str) -> str:
    """The slot a `{value}` writes to when no `secret_ref` names one."""
    return f"connector/{kind}/{name}/{field_name}"


def secret_view(meta: SecretMeta | None, *, resolvable: bool) -> dict[str, Any]:
    """Redacted secret metadata: configured, source, secret_ref, env; never the value."""
    if meta is None:
        return {"configured": False, "source": None, "secret_ref": None, "env": None}
    return {"configured": resolvable, "source": meta.source, "secret_ref": meta.secret_ref, "env": meta.env}


def settings_to_dict(s: CommonSettings) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(s)
    return out
