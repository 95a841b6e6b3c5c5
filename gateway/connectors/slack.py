"""The slack kind: its settings, signed Events API ingress (v0 HMAC, 300 s), files, chat addresses, chat.postMessage."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec

from actors.connector import Answer, DeliveryRequest, DeliveryResult, Inbound
from gateway.connectors.base import (
    AdapterBase,
    ConnectorKind,
    Context,
    canonical,
    fingerprint,
    known_event,
    reply_dicts,
    save_download,
    store_items,
)
from gateway.connectors.model import ChatSettings, SecretMeta, check_url
from gateway.errors import (
    ConflictError,
    InvalidRequestError,
    UnauthorizedError,
    UnavailableError,
    ValidationFailedError,
)
from gateway.outbound import origin_of
from storage.ingress import IngressItem, Outcome

log = logging.getLogger("gateway.connectors.slack")

MAX_SKEW = 300
# Where Slack serves `url_private(_download)` files (https://files.slack.com/files-pri/T…-F…/…). The bot token is
# sent only there, or to the connector's own `api_base_url` (which the owner set: a proxy, or a test's fake).
SLACK_FILE_ORIGINS = frozenset({("https", "files.slack.com", 443)})


class SlackSettings(ChatSettings, forbid_unknown_fields=True, kw_only=True):
    bot_token: SecretMeta | None = None
    signing_secret: SecretMeta | None = None
    api_base_url: str = "https://slack.com/api"

    def owner_urls(self) -> list[str]:
        return [self.api_base_url]

    def check(self, what: str) -> None:
        super().check(what)
        check_url(self.api_base_url, f"{what}: api_base_url")
        if self.signing_secret is None and not self.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: no signing_secret is configured; set one or set allow_unauthenticated_ingress=true"
            )


def check_address(address: str | dict[str, Any], what: str) -> None:
    if not isinstance(address, dict) or not isinstance(address.get("channel"), str):
        raise ValidationFailedError(f'{what}: a slack address is {{"channel": ..., "thread_ts"?: ...}}')


def chat_address(chat_id: str, topic_id: str) -> dict[str, Any]:
    """A chat's address from its session key: the channel, and the thread's root message when there is one."""
    return {"channel": chat_id, **({"thread_ts": topic_id} if topic_id else {})}


def verify_signature(secret: str, headers: dict[str, str] | Any, body: bytes, *, now: float | None = None) -> None:
    """Check Slack's `v0` signature over the timestamp and the raw body; raise 401 on any doubt."""
    ts = headers.get("x-slack-request-timestamp")
    sig = headers.get("x-slack-signature")
    if not ts or not sig:
        raise UnauthorizedError("missing Slack signature headers")
    try:
        stamp = int(ts)
    except ValueError:
        raise UnauthorizedError("invalid X-Slack-Request-Timestamp") from None
    current = time.time() if now is None else now
    if abs(current - stamp) > MAX_SKEW:
        raise UnauthorizedError("stale or future Slack request timestamp")
    mac = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(("v0=" + mac).encode(), sig.encode()):
        raise UnauthorizedError("invalid Slack signature")


class SlackConnector(AdapterBase):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        s = ctx.config.settings
        assert isinstance(s, SlackSettings)
        self.s = s

    async def handle(self, msg: Inbound) -> Answer:
        secret = self.ctx.secrets.get("signing_secret")
        signed = secret is not None
        if secret is not None:
            verify_signature(secret, msg.headers, msg.body)
        elif not self.s.allow_unauthenticated_ingress:
            raise UnavailableError(f"slack connector {self.name} has no usable signing secret")
        # A plain 429 with Retry-After and no `X-Slack-No-Retry`: Slack retries the event later (same event_id,
        # deduplicated), so a burst is delayed, never dropped.
        self.check_ingress_rate()
        try:
            body = msgspec.json.decode(msg.body)
        except msgspec.DecodeError:
            raise InvalidRequestError("the body is not JSON (Events API payloads are JSON)") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("the body must be a JSON object")
        kind = body.get("type")
        if kind == "url_verification":
            return Answer(200, {"challenge": body.get("challenge", "")})
        if kind != "event_callback":
            return Answer(200, {"ok": True, "ignored": f"type {kind!r}"})
        event = body.get("event")
        event_id = body.get("event_id")
        if not isinstance(event, dict) or not isinstance(event_id, str) or not event_id:
            raise InvalidRequestError("an event_callback needs event_id and event")
        if event.get("bot_id") or event.get("subtype") in ("bot_message", "message_changed", "message_deleted"):
            return Answer(200, {"ok": True, "ignored": "bot or edit event"})
        if event.get("type") not in ("message", "app_mention"):
            return Answer(200, {"ok": True, "ignored": f"event type {event.get('type')!r}"})
        channel = str(event.get("channel") or "")
        root = str(event.get("thread_ts") or event.get("ts") or "")
        text = str(event.get("text") or "")
        payload = canonical({"event_id": event_id, "event": event, "team_id": body.get("team_id")})
        files = event.get("files") or []
        if files:
            # Slack re-sends after 3 s without an answer: a retry must not download the files again.
            seen = await known_event(self.ctx, event_id, payload)
            if seen is not None:
                return self._answer(seen)
        for f in files if isinstance(files, list) else []:
            text += "\n" + await self._file(f, signed=signed)
        targets: list[dict[str, Any]] | None = None
        if self.s.include_self_output or self.s.additional_reply_targets:
            targets = []
            if self.s.include_self_output:
                targets.append(
                    {"plugin": "slack", "connector": self.name, "address": {"channel": channel, "thread_ts": root}}
                )
            targets.extend(reply_dicts(self.s.additional_reply_targets, owner_set=True))
        spec = self.session_spec([(channel, root)])
        item = IngressItem(event_id, fingerprint(payload), text.strip(), payload, spec, targets)
        (o,) = await store_items(self.ctx, [item])
        return self._answer(o)

    def _answer(self, o: Outcome) -> Answer:
        if o.status == "rejected":
            raise ConflictError(o.reason or "rejected")
        return Answer(200, {"ok": True, "status": o.status, "session_id": o.session_id})

    def file_origins(self) -> frozenset[tuple[str, str, int]]:
        api = _origin(self.s.api_base_url)
        return SLACK_FILE_ORIGINS | ({api} if api is not None else set())

    async def _file(self, f: Any, *, signed: bool) -> str:
        if not isinstance(f, dict):
            return ""
        name = str(f.get("name") or f.get("id") or "file")
        url = f.get("url_private_download") or f.get("url_private")
        token = self.ctx.secrets.get("bot_token")
        if not isinstance(url, str) or token is None:
            return f"[file not downloaded: {name}]"
        if not signed:
            # Anyone may post an unsigned event (allow_unauthenticated_ingress): it must not make us fetch a URL.
            return f"[file not downloaded: {name} (the event was not signed)]"
        if _origin(url) not in self.file_origins():
            log.warning("slack connector %s: file %s is not on Slack's file host; not downloaded", self.name, name)
            return f"[file not downloaded: {name} (not on Slack's file host)]"
        import httpx  # loaded with the adapter's client (see AdapterBase); bound here for the except clause

        try:
            path = await save_download(
                self.ctx, self.http, url, f"{f.get('id', 'f')}-{name}", {"Authorization": f"Bearer {token}"}
            )
        except (httpx.HTTPError, Exception) as exc:
            return f"[file {name} could not be downloaded: {type(exc).__name__}]"
        return f"[file: {path}]"

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        token = self.ctx.secrets.get("bot_token")
        if token is None:
            return DeliveryResult("terminal", "slack connector has no bot_token to post with")
        a = request.target.get("address") or {}
        body: dict[str, Any] = {"channel": a.get("channel"), "text": request.text}
        if a.get("thread_ts"):
            body["thread_ts"] = a["thread_ts"]
        url = self.s.api_base_url.rstrip("/") + "/chat.postMessage"
        import httpx  # loaded with the adapter's client (see AdapterBase); bound here for the except clause

        try:
            r = await self.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            return DeliveryResult("retryable", f"{type(exc).__name__} calling chat.postMessage")
        if r.status_code == 429 or r.status_code >= 500:
            retry = r.headers.get("retry-after", "")
            return DeliveryResult(
                "retryable", f"chat.postMessage HTTP {r.status_code}", float(retry) if retry.isdigit() else None
            )
        try:
            data = r.json()
        except ValueError:
            return DeliveryResult("retryable", "chat.postMessage answered non-JSON")
        if data.get("ok"):
            return DeliveryResult("delivered")
        error = str(data.get("error", "unknown_error"))
        if error in ("ratelimited", "internal_error", "service_unavailable", "request_timeout"):
            return DeliveryResult("retryable", f"chat.postMessage: {error}")
        return DeliveryResult("terminal", f"chat.postMessage: {error}")


def _origin(url: str) -> tuple[str, str, int] | None:
    origin = origin_of(url)
    return None if origin is None else (urlsplit(url).scheme.lower(), *origin)


KIND = ConnectorKind(
    name="slack",
    settings=SlackSettings,
    adapter=SlackConnector,
    check_address=check_address,
    chat_address=chat_address,
    # Slack signs the raw body (v0 HMAC with X-Slack-Request-Timestamp).
    ingress_security={"slackSignature": {"type": "apiKey", "in": "header", "name": "X-Slack-Signature"}},
)
