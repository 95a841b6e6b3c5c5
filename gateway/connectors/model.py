"""Connector settings: one msgspec Struct per kind, secret metadata, field-aware merging, validation and views."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from gateway.errors import ValidationFailedError

KINDS = ("telegram", "slack", "http", "external")
Kind = Literal["telegram", "slack", "http", "external"]
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
    """Where a turn's final output goes: a plugin (connector kind), the connector's name and an address."""

    plugin: Kind
    connector: str
    address: str | dict[str, Any]


class ChildProcess(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
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


# Ingress requests a second per http, slack or telegram connector (a token bucket, burst one second's worth). Far
# above real traffic: Slack sends a workspace at most 30,000 events an hour (~8/s), and both platforms retry a 429.
DEFAULT_INGRESS_RATE = 50.0
MAX_INGRESS_RATE = 100_000.0


class _Common(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    allow_unauthenticated_ingress: bool = False
    ingress_events_per_second: float | None = DEFAULT_INGRESS_RATE  # null: no limit
    fixed_session_id: str | None = None
    session_policy: SessionPolicy = msgspec.field(default_factory=SessionPolicy)


class HttpSettings(_Common, forbid_unknown_fields=True, kw_only=True):
    actor_id: str | None = None
    bearer_token: SecretMeta | None = None
    default_reply_targets: list[ReplyHandle] = msgspec.field(default_factory=list)
    default_binding_keys: list[str] = msgspec.field(default_factory=list)


class _Chat(_Common, forbid_unknown_fields=True, kw_only=True):
    include_self_output: bool = False
    additional_reply_targets: list[ReplyHandle] = msgspec.field(default_factory=list)
    additional_binding_keys: list[str] = msgspec.field(default_factory=list)


class SlackSettings(_Chat, forbid_unknown_fields=True, kw_only=True):
    bot_token: SecretMeta | None = None
    signing_secret: SecretMeta | None = None
    api_base_url: str = "https://slack.com/api"


class TelegramSettings(_Chat, forbid_unknown_fields=True, kw_only=True):
    bot_token: SecretMeta | None = None
    secret_token: SecretMeta | None = None
    api_base_url: str = "https://api.telegram.org"
    ingress_mode: Literal["webhook", "polling"] = "webhook"
    polling_timeout_seconds: int = 30


class ExternalSettings(_Chat, forbid_unknown_fields=True, kw_only=True):
    platform: str = ""
    mode: Literal["ingress", "sidecar"] = "ingress"
    base_url: str | None = None
    shared_token: SecretMeta | None = None
    # Scripts batch-upload at their own pace: no limit unless the operator sets one (as the reference).
    ingress_events_per_second: float | None = None
    # The reference implementation's limit; raise it for scripts that batch more (the benchmark sends 100).
    max_batch_events: int = 64
    child_process: ChildProcess | None = None


Settings = HttpSettings | SlackSettings | TelegramSettings | ExternalSettings
SETTINGS: dict[str, type[Settings]] = {
    "http": HttpSettings,
    "slack": SlackSettings,
    "telegram": TelegramSettings,
    "external": ExternalSettings,
}
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "http": ("bearer_token",),
    "slack": ("bot_token", "signing_secret"),
    "telegram": ("bot_token", "secret_token"),
    "external": ("shared_token",),
}


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """One connector as the runtime sees it: validated settings plus where it came from."""

    kind: str
    name: str
    source: Literal["file", "daemon"]
    settings: Settings
    # File-declared `{value = "..."}` secrets are kept in memory only, never written to the database.
    file_secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def check_kind(kind: str) -> str:
    """Return `kind` if it is a connector kind; raise a 404-class error naming the kinds otherwise."""
    if kind not in KINDS:
        from gateway.errors import NotFoundError

        raise NotFoundError(f"unknown connector kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValidationFailedError(
            f"invalid connector name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def _check_url(value: str | None, what: str) -> None:
    if value is not None and not re.match(r"^https?://[^\s/]+", value):
        raise ValidationFailedError(f"{what} must be an http:// or https:// URL")


def check_reply_handle(h: ReplyHandle, what: str) -> None:
    """Validate a ReplyHandle's plugin-specific address."""
    a = h.address
    if not NAME_RE.match(h.connector):
        raise ValidationFailedError(f"{what}: connector must be a connector name")
    if h.plugin == "http":
        url = a if isinstance(a, str) else a.get("url")
        if not isinstance(url, str):
            raise ValidationFailedError(f'{what}: an http address is a URL or {{"url": ...}}')
        _check_url(url, f"{what}.address")
    elif h.plugin == "slack":
        if not isinstance(a, dict) or not isinstance(a.get("channel"), str):
            raise ValidationFailedError(f'{what}: a slack address is {{"channel": ..., "thread_ts"?: ...}}')
    elif h.plugin == "telegram":
        if not isinstance(a, dict) or not isinstance(a.get("chat_id"), int | str):
            raise ValidationFailedError(f'{what}: a telegram address is {{"chat_id": ..., "message_thread_id"?: ...}}')
    elif not isinstance(a, dict):
        raise ValidationFailedError(f"{what}: an external address is an object (the sidecar's reply route)")


def parse_settings(kind: str, data: dict[str, Any], *, what: str = "connector") -> Settings:
    """Convert a settings dict (secret fields already as metadata) into the kind's Struct; raise 422 on errors."""
    try:
        settings = msgspec.convert(data, SETTINGS[kind], strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationFailedError(f"{what}: {_explain(str(exc))}") from None
    validate(settings, what)
    return settings


def _explain(message: str) -> str:
    if " - at `$." in message:
        msg, where = message.split(" - at `$.", 1)
        return f"field {where.rstrip('`')}: {msg}"
    return message


def validate(s: Settings, what: str) -> None:
    """Per-kind rules that types alone cannot say."""
    if s.fixed_session_id is not None and not s.fixed_session_id.strip():
        raise ValidationFailedError(f"{what}: fixed_session_id must not be empty")
    rate = s.ingress_events_per_second
    if rate is not None and not 0 < rate <= MAX_INGRESS_RATE:
        raise ValidationFailedError(
            f"{what}: ingress_events_per_second must be > 0 and at most {MAX_INGRESS_RATE:g} (or null for no limit)"
        )
    targets: list[ReplyHandle] = s.default_reply_targets if isinstance(s, HttpSettings) else s.additional_reply_targets
    for i, t in enumerate(targets):
        check_reply_handle(t, f"{what}: reply target {i}")
    if isinstance(s, HttpSettings):
        if s.bearer_token is None and not s.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: no bearer_token is configured; set one or set allow_unauthenticated_ingress=true"
            )
    elif isinstance(s, SlackSettings):
        _check_url(s.api_base_url, f"{what}: api_base_url")
        if s.signing_secret is None and not s.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: no signing_secret is configured; set one or set allow_unauthenticated_ingress=true"
            )
    elif isinstance(s, TelegramSettings):
        _check_url(s.api_base_url, f"{what}: api_base_url")
        if s.ingress_mode == "polling" and s.bot_token is None:
            raise ValidationFailedError(f"{what}: ingress_mode=polling requires a bot_token")
        if s.ingress_mode == "webhook" and s.secret_token is None and not s.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: ingress_mode=webhook requires a secret_token or allow_unauthenticated_ingress=true"
            )
        if not 0 <= s.polling_timeout_seconds <= 50:
            raise ValidationFailedError(f"{what}: polling_timeout_seconds must be between 0 and 50")
    else:
        _check_url(s.base_url, f"{what}: base_url")
        if s.shared_token is None and not s.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: no shared_token is configured; set one or set allow_unauthenticated_ingress=true"
            )
        if not 1 <= s.max_batch_events <= 1000:
            raise ValidationFailedError(f"{what}: max_batch_events must be between 1 and 1000")
        cp = s.child_process
        if cp is not None:
            if not cp.command:
                raise ValidationFailedError(f"{what}: child_process.command must name a program")
            if s.base_url is None:
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
    p = s.session_policy
    if p.persona_id is not None and not p.persona_id:
        raise ValidationFailedError(f"{what}: session_policy.persona_id must not be empty")


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


def settings_to_dict(s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(s)
    return out
