"""What every connector kind shares: the `ConnectorKind` hooks, the adapter context, auth, fingerprints, ingestion."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import msgspec
import trio

from actors.base import AskTimeoutError
from actors.connector import Connector
from actors.store import StorageUnavailableError, Store
from gateway.connectors.model import NAME_RE, CommonSettings, ConnectorConfig, ReplyHandle, SecretMeta
from gateway.errors import (
    GatewayError,
    StorageRefusedError,
    UnauthorizedError,
    UnavailableError,
    ValidationFailedError,
)
from gateway.http.ratelimit import TokenBucket, rate_limited
from gateway.outbound import OutboundPolicy
from storage import ingress as ingress_db
from storage.clock import now_ms
from storage.ingress import IngressItem, Outcome, SessionSpec

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("gateway.connectors")


class Context(msgspec.Struct):
    """Everything an adapter may use; built fresh for every life of the connector's actor."""

    config: ConnectorConfig
    secrets: dict[str, str]  # secret field -> resolved value (absent when not configured or unresolvable)
    store: Store
    wake_dispatcher: Callable[[], None]
    files_dir: Path
    gateway_url: Callable[[], str]
    wait_listening: Callable[[], Awaitable[None]]  # returns once `gateway_url` answers (the edge listens)
    slot_value: Callable[[str], Awaitable[str | None]]
    sidecar_tokens: SidecarTokens
    outbound: OutboundPolicy = msgspec.field(default_factory=OutboundPolicy)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)  # adapter status shown in /api/status
    # Every registered kind, to check the reply handles an event names (`check_reply_handle`): passed in, since a
    # kind's module cannot import the registry that imports it.
    kinds: Mapping[str, ConnectorKind] = msgspec.field(default_factory=dict)

    @property
    def ref(self) -> str:
        return self.config.ref

    @property
    def transport(self) -> str:
        return f"{self.config.kind}:{self.config.name}"


class ConnectorKind(msgspec.Struct, frozen=True):
    """One connector kind, whole: each kind's module defines one, and `registry.KINDS` lists them.

    - `settings`: the kind's settings Struct (a `CommonSettings`); its `check` holds the kind's own rules, and its
      fields typed `SecretMeta | None` are the kind's secret fields (write-only, resolved when the actor starts).
    - `adapter`: builds the actor's `Connector` for one life: ingress (`handle` for requests to the kind's ingress
      routes, `background` for pollers and sidecars) and delivery (`deliver`, one reply to the platform).
    - `check_address`: raise 422 (naming `what`) unless the value is an address of this kind (a `ReplyHandle`'s).
    - `chat_address`: reply addressing, the address of a chat of this kind from its session key's chat and topic;
      `/api/message` and cron jobs use it so that a chat with no reply targets yet replies into itself. None: the
      kind's chats have no address of their own (replies go where the connector's settings or events say).
    - `root_ingress`: the kind takes events on `POST /v1/connectors/{kind}/{name}` (external uses `/events`).
    - `ingress_security`: the OpenAPI security schemes its ingress checks besides a Bearer token, by name
      (`/openapi.json` lists them on the ingress route).
    """

    name: str
    settings: type[CommonSettings]
    adapter: Callable[[Context], Connector]
    check_address: Callable[[str | dict[str, Any], str], None]
    chat_address: Callable[[str, str], dict[str, Any]] | None = None
    root_ingress: bool = True
    ingress_security: Mapping[str, Mapping[str, str]] = msgspec.field(default_factory=dict)
    secret_fields: tuple[str, ...] = ()  # computed from `settings`: any value given is replaced

    def __post_init__(self) -> None:
        secret = [f.name for f in msgspec.structs.fields(self.settings) if SecretMeta in get_args(f.type)]
        msgspec.structs.force_setattr(self, "secret_fields", tuple(secret))


def check_reply_handle(h: ReplyHandle, what: str, kinds: Mapping[str, ConnectorKind]) -> None:
    """Validate a ReplyHandle: a registered plugin, a connector name, and an address that plugin accepts."""
    kind = kinds.get(h.plugin)
    if kind is None:
        raise ValidationFailedError(f"{what}: plugin must be one of {', '.join(kinds)}")
    if not NAME_RE.match(h.connector):
        raise ValidationFailedError(f"{what}: connector must be a connector name")
    kind.check_address(h.address, what)


class AdapterBase(Connector):
    """Holds the context, the ingress rate limit and the HTTP clients for the adapter's outbound calls."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.kind = ctx.config.kind
        self.name = ctx.config.name
        # httpx is loaded by the first connector actor, not at start: a gateway without one never needs it.
        import httpx

        self.timeout = httpx.Timeout(30.0, connect=10.0)
        # A connector's settings are the owner's (the config file, or routes that take the gateway token only), so
        # its platform's base URL may be private (a local Bot API server, a sidecar on loopback); every other URL
        # this client meets (a file named by an event) must be public unless `[outbound] allow` says otherwise.
        self.http = ctx.outbound.client(trusted=self.owner_urls(), timeout=self.timeout)
        self._trusted: dict[str, httpx.AsyncClient] = {}
        rate = ctx.config.settings.ingress_events_per_second
        # Issue 4: limits on rates everywhere. One bucket per connector (per life of its actor), burst one second.
        self.ingress_bucket = TokenBucket(rate) if rate else None
        # One line per life: a crash in between is logged by its supervisor, a restart starts a new life.
        log.info("connector %s started (%s)", ctx.ref, ctx.config.source)

    def take_ingress(self) -> float:
        """Charge one ingress event; 0 when allowed, else the seconds until one would be (nothing taken then)."""
        wait = self.ingress_bucket.take() if self.ingress_bucket is not None else 0.0
        if wait > 0:
            self.ctx.extra["ingress_rate_limited"] = int(self.ctx.extra.get("ingress_rate_limited", 0)) + 1
        return wait

    def take_ingress_batch(self, count: int) -> tuple[int, float]:
        """Charge `count` ingress events at once: (how many of the first are allowed, seconds until the next one
        would be), like `take_ingress` called per event."""
        if self.ingress_bucket is None:
            return count, 0.0
        taken, wait = self.ingress_bucket.take_up_to(count)
        if taken < count:
            self.ctx.extra["ingress_rate_limited"] = int(self.ctx.extra.get("ingress_rate_limited", 0)) + count - taken
        return taken, wait

    def check_ingress_rate(self) -> None:
        """Charge one ingress request; raise 429 `RATE_LIMITED` with `Retry-After` (whole seconds, ≥ 1) when over.

        Called after the request's authentication, so that requests without the secret cannot use up the
        platform's allowance; the platforms (Slack, Telegram) retry a 429 later, so nothing is lost.
        """
        wait = self.take_ingress()
        if wait > 0:
            raise rate_limited(wait, f"connector {self.ctx.ref} is over ingress_events_per_second")

    def owner_urls(self) -> list[str]:
        """The base URLs in this connector's settings (set by the owner)."""
        return self.ctx.config.settings.owner_urls()

    def client_for(self, target: Mapping[str, Any], url: str) -> httpx.AsyncClient:
        """The client for a reply target's URL: one that may reach a private address only when the owner named the
        target (`owner_set`, see `reply_dicts`); a target named by whoever sent the event gets the public-only one."""
        if target.get("owner_set") is not True:
            return self.http
        client = self._trusted.get(url)
        if client is None:
            client = self._trusted[url] = self.ctx.outbound.client(trusted=[url], timeout=self.timeout)
        return client

    async def aclose(self) -> None:
        log.info("connector %s stopped", self.ctx.ref)
        await self.http.aclose()
        for client in self._trusted.values():
            await client.aclose()

    def session_spec(self, candidates: Sequence[tuple[str, str]]) -> SessionSpec:
        """Session resolution for this connector: fixed id first, then the candidate (chat, topic) keys."""
        s = self.ctx.config.settings
        return SessionSpec(
            candidates=tuple((self.ctx.transport, chat, topic) for chat, topic in candidates if chat),
            fixed_session_id=s.fixed_session_id,
            create_if_missing=s.session_policy.create_if_missing,
            transport=self.ctx.transport,
        )


def check_bearer(headers: Mapping[str, str], expected: str | None, *, allow_unauthenticated: bool, what: str) -> None:
    """Require `Authorization: Bearer <expected>` unless the connector allows unauthenticated ingress."""
    if expected is None:
        if allow_unauthenticated:
            return
        raise UnavailableError(f"{what} has no usable secret configured; set it or allow unauthenticated ingress")
    header = headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected.encode()):
        raise UnauthorizedError(
            f"missing or invalid token for {what}; send `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


def canonical(obj: Any) -> bytes:
    """A stable encoding of a payload (sorted keys), stored and fingerprinted."""
    return msgspec.json.encode(obj, order="sorted")


def fingerprint(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def reply_dicts(handles: Sequence[ReplyHandle], *, owner_set: bool) -> list[dict[str, Any]]:
    """Reply targets as stored. `owner_set`: the owner named them (connector settings, the reply-targets route), so
    their URLs may be private; a sender's own targets never carry the mark (ReplyHandle has no such field)."""
    out: list[dict[str, Any]] = []
    for h in handles:
        d: dict[str, Any] = msgspec.to_builtins(h)
        if owner_set:
            d["owner_set"] = True
        out.append(d)
    return out


async def store_items(
    ctx: Context,
    items: Sequence[IngressItem | Outcome],
    *,
    poll_offset: int | None = None,
    same_payload: ingress_db.SamePayload | None = None,
) -> list[Outcome]:
    """Commit a batch of events in one transaction, then wake the dispatcher; 503 when storage cannot commit.
    `same_payload`: see `storage.ingress.ingest`."""
    try:
        out = await ctx.store.call(
            ingress_db.ingest, ctx.ref, items, now_ms=now_ms(), poll_offset=poll_offset, same_payload=same_payload
        )
    except (StorageUnavailableError, AskTimeoutError) as exc:
        raise storage_refused(exc) from None
    if any(o.created for o in out):
        ctx.wake_dispatcher()
    return out


async def known_event(ctx: Context, event_key: str, payload: bytes) -> Outcome | None:
    """A platform's retry of an event already stored: answer it before any slow work (file downloads)."""
    try:
        found: Outcome | None = await ctx.store.read(ingress_db.replay_of, ctx.ref, event_key, fingerprint(payload))
    except (StorageUnavailableError, AskTimeoutError) as exc:
        raise storage_refused(exc) from None
    return found


def storage_refused(exc: Exception) -> StorageRefusedError:
    """The 503 for events storage did not take: none of them is stored, so the sender retries them all."""
    return StorageRefusedError(
        f"storage cannot accept events right now ({exc}); nothing was stored, retry later",
        code="STORAGE_UNAVAILABLE",
        headers={"Retry-After": "5"},
    )


def safe_filename(name: str) -> str:
    cleaned = re.sub(r'[/\\<>:"|?*\x00-\x1f]', "_", name).strip(". ") or "file"
    return cleaned[:120]


async def save_download(ctx: Context, client: httpx.AsyncClient, url: str, name: str, headers: dict[str, str]) -> Path:
    """Download `url` into the connector's files folder; raise GatewayError(502) when the platform refuses."""
    folder = ctx.files_dir / ctx.config.kind / ctx.config.name
    await trio.Path(folder).mkdir(parents=True, exist_ok=True)
    target = folder / safe_filename(name)
    async with client.stream("GET", url, headers=headers) as r:
        if r.status_code != 200:
            raise GatewayError(f"file download failed with HTTP {r.status_code}", status=502, code="UPSTREAM_ERROR")
        data = b""
        async for chunk in r.aiter_bytes():
            data += chunk
            if len(data) > 50 * 1024 * 1024:
                raise GatewayError("inbound file larger than 50 MB", status=502, code="UPSTREAM_ERROR")
    await trio.Path(target).write_bytes(data)
    return target


class _Grant(msgspec.Struct):
    ref: str
    keys: dict[str, str]  # env key -> slot
    expires: float


class SidecarTokens:
    """Short-lived opaque tokens handed to sidecars; each allows fetching a fixed set of secret slots."""

    def __init__(self) -> None:
        self._grants: dict[str, _Grant] = {}

    def issue(self, ref: str, keys: dict[str, str], ttl: float) -> str:
        import secrets

        token = secrets.token_urlsafe(32)
        from gateway.logs import redactor

        redactor.add(token)
        self._grants[token] = _Grant(ref, dict(keys), time.monotonic() + ttl)
        return token

    def revoke(self, token: str) -> None:
        self._grants.pop(token, None)

    def check(self, token: str | None, ref: str) -> _Grant:
        """Return the grant of a live token for this connector; raise 401 otherwise (constant-time lookup)."""
        grant: _Grant | None = None
        for t, g in list(self._grants.items()):
            if g.expires < time.monotonic():
                self._grants.pop(t, None)
                continue
            if token is not None and hmac.compare_digest(t.encode(), token.encode()) and g.ref == ref:
                grant = g
        if grant is None:
            raise UnauthorizedError("missing, expired or revoked sidecar credential token")
        return grant
