"""The telegram kind: its settings, webhook and getUpdates ingress, file downloads, chat addresses, sendMessage."""

from __future__ import annotations

import hmac
import logging
from typing import Any, Literal

import msgspec
import trio

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
from storage import ingress as ingress_db
from storage.ingress import IngressItem, Outcome

log = logging.getLogger("gateway.connectors.telegram")


class TelegramSettings(ChatSettings, forbid_unknown_fields=True, kw_only=True):
    bot_token: SecretMeta | None = None
    secret_token: SecretMeta | None = None
    api_base_url: str = "https://api.telegram.org"
    ingress_mode: Literal["webhook", "polling"] = "webhook"
    polling_timeout_seconds: int = 30

    def owner_urls(self) -> list[str]:
        return [self.api_base_url]

    def check(self, what: str) -> None:
        super().check(what)
        check_url(self.api_base_url, f"{what}: api_base_url")
        if self.ingress_mode == "polling" and self.bot_token is None:
            raise ValidationFailedError(f"{what}: ingress_mode=polling requires a bot_token")
        if self.ingress_mode == "webhook" and self.secret_token is None and not self.allow_unauthenticated_ingress:
            raise ValidationFailedError(
                f"{what}: ingress_mode=webhook requires a secret_token or allow_unauthenticated_ingress=true"
            )
        if not 0 <= self.polling_timeout_seconds <= 50:
            raise ValidationFailedError(f"{what}: polling_timeout_seconds must be between 0 and 50")


def check_address(address: str | dict[str, Any], what: str) -> None:
    if not isinstance(address, dict) or not isinstance(address.get("chat_id"), int | str):
        raise ValidationFailedError(f'{what}: a telegram address is {{"chat_id": ..., "message_thread_id"?: ...}}')


def chat_address(chat_id: str, topic_id: str) -> dict[str, Any]:
    """A chat's address from its session key: the chat id (a number when it is one) and the forum topic."""
    address: dict[str, Any] = {"chat_id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id}
    if topic_id.isdigit():
        address["message_thread_id"] = int(topic_id)
    return address


class TelegramApiError(Exception):
    """The Bot API answered an error or could not be reached."""


class TelegramConnector(AdapterBase):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        s = ctx.config.settings
        assert isinstance(s, TelegramSettings)
        self.s = s
        self.token = ctx.secrets.get("bot_token")
        self.api = s.api_base_url.rstrip("/")

    def _method(self, name: str) -> str:
        return f"{self.api}/bot{self.token}/{name}"

    # ---- ingress ----

    async def handle(self, msg: Inbound) -> Answer:
        if self.s.ingress_mode == "polling":
            raise ConflictError(f"telegram connector {self.name} uses polling; webhook posts are not accepted")
        secret = self.ctx.secrets.get("secret_token")
        if secret is not None:
            got = msg.headers.get("x-telegram-bot-api-secret-token", "")
            if not hmac.compare_digest(got.encode(), secret.encode()):
                raise UnauthorizedError("missing or wrong X-Telegram-Bot-Api-Secret-Token")
        elif not self.s.allow_unauthenticated_ingress:
            raise UnavailableError(f"telegram connector {self.name} has no usable secret_token")
        # Telegram re-sends an update refused with a 429 (deduplicated by update_id). Polling needs no limit: the
        # connector asks for updates at its own pace.
        self.check_ingress_rate()
        try:
            update = msgspec.json.decode(msg.body)
        except msgspec.DecodeError:
            raise InvalidRequestError("the body is not JSON (a Telegram Update)") from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise InvalidRequestError("a Telegram Update needs an integer update_id")
        item = await self._item(update)
        (o,) = await store_items(self.ctx, [item])
        if o.status == "rejected" and o.reason and "different payload" in o.reason:
            raise ConflictError(o.reason)
        return Answer(200, {"ok": True, "status": o.status, "session_id": o.session_id})

    async def _item(self, update: dict[str, Any]) -> IngressItem | Outcome:
        key = str(update["update_id"])
        message = update.get("message") or update.get("channel_post") or update.get("edited_message")
        if not isinstance(message, dict):
            return Outcome("rejected", reason="update carries no message")
        sender = message.get("from") or {}
        if isinstance(sender, dict) and sender.get("is_bot"):
            return Outcome("rejected", reason="bot-authored message ignored")
        chat = message.get("chat") or {}
        chat_id = str(chat.get("id", "")) if isinstance(chat, dict) else ""
        thread = message.get("message_thread_id")
        topic = str(thread) if thread is not None and message.get("is_topic_message", True) else ""
        text = str(message.get("text") or message.get("caption") or "")
        payload = canonical(update)
        files = _files(message)
        if files:
            # A re-sent update (webhook retry, or polling after a crash) must not download its files again.
            seen = await known_event(self.ctx, key, payload)
            if seen is not None:
                return seen
        for file_id, name in files:
            text += "\n" + await self._download(file_id, name)
        targets: list[dict[str, Any]] | None = None
        if self.s.include_self_output or self.s.additional_reply_targets:
            targets = []
            if self.s.include_self_output:
                targets.append({"plugin": "telegram", "connector": self.name, "address": chat_address(chat_id, topic)})
            targets.extend(reply_dicts(self.s.additional_reply_targets, owner_set=True))
        return IngressItem(
            key, fingerprint(payload), text.strip(), payload, self.session_spec([(chat_id, topic)]), targets
        )

    async def _download(self, file_id: str, name: str) -> str:
        if self.token is None:
            return f"[file not downloaded: {name}]"
        try:
            info = await self._call("getFile", {"file_id": file_id})
            file_path = str(info["file_path"])
            url = f"{self.api}/file/bot{self.token}/{file_path}"
            if origin_of(url) != origin_of(self.api):  # the token goes to the configured Bot API host only
                raise TelegramApiError(f"getFile named a file_path that leaves {self.api}")
            path = await save_download(self.ctx, self.http, url, f"{file_id}-{name}", {})
        except Exception as exc:
            return f"[file {name} could not be downloaded: {type(exc).__name__}]"
        return f"[file: {path}]"

    async def _call(self, method: str, body: dict[str, Any], *, timeout: float = 30.0) -> Any:
        import httpx  # loaded with the adapter's client (see AdapterBase); bound here for the except clause

        try:
            r = await self.http.post(self._method(method), json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            # Never include the URL: it carries the bot token.
            raise TelegramApiError(f"{method}: {type(exc).__name__}") from None
        try:
            data = r.json()
        except ValueError:
            raise TelegramApiError(f"{method}: HTTP {r.status_code}, not JSON") from None
        if not data.get("ok"):
            raise TelegramApiError(f"{method}: HTTP {r.status_code} {data.get('description', '')}".strip())
        return data.get("result")

    # ---- polling ----

    async def background(self) -> None:
        if self.s.ingress_mode != "polling":
            await super().background()
            return
        if self.token is None:
            raise TelegramApiError("polling needs a bot_token with a value")
        self.ctx.extra["polling"] = "starting"
        offset = await self.ctx.store.call(ingress_db.poll_offset, self.ctx.ref)
        while True:
            # A failure raises: the supervisor restarts this actor with growing backoff and counts it.
            updates = await self._call(
                "getUpdates",
                {"offset": offset, "timeout": self.s.polling_timeout_seconds, "allowed_updates": ["message"]},
                timeout=self.s.polling_timeout_seconds + 15,
            )
            self.ctx.extra["polling"] = "ok"
            if not isinstance(updates, list) or not updates:
                await trio.lowlevel.checkpoint()
                continue
            items: list[IngressItem | Outcome] = []
            top = offset
            for u in updates:
                if isinstance(u, dict) and isinstance(u.get("update_id"), int):
                    items.append(await self._item(u))
                    top = max(top, u["update_id"] + 1)
            # The new offset commits with the updates it confirms: a crash re-fetches, and dedupe absorbs it.
            await store_items(self.ctx, items, poll_offset=top)
            offset = top

    # ---- replies ----

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        if self.token is None:
            return DeliveryResult("terminal", "telegram connector has no bot_token to send with")
        a = request.target.get("address") or {}
        body: dict[str, Any] = {"chat_id": a.get("chat_id"), "text": request.text}
        if a.get("message_thread_id") is not None:
            body["message_thread_id"] = a["message_thread_id"]
        import httpx  # loaded with the adapter's client (see AdapterBase); bound here for the except clause

        try:
            r = await self.http.post(self._method("sendMessage"), json=body)
        except httpx.HTTPError as exc:
            return DeliveryResult("retryable", f"sendMessage: {type(exc).__name__}")
        try:
            data = r.json()
        except ValueError:
            data = {}
        if r.status_code == 200 and data.get("ok"):
            return DeliveryResult("delivered")
        if r.status_code == 429 or r.status_code >= 500:
            retry = (data.get("parameters") or {}).get("retry_after")
            return DeliveryResult(
                "retryable", f"sendMessage HTTP {r.status_code}", float(retry) if isinstance(retry, int) else None
            )
        return DeliveryResult("terminal", f"sendMessage HTTP {r.status_code} {data.get('description', '')}".strip())


def _files(message: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    photos = message.get("photo")
    if isinstance(photos, list) and photos:
        # Telegram lists every size; the last is the largest.
        best = photos[-1]
        if isinstance(best, dict) and best.get("file_id"):
            out.append((str(best["file_id"]), "photo.jpg"))
    doc = message.get("document")
    if isinstance(doc, dict) and doc.get("file_id"):
        out.append((str(doc["file_id"]), str(doc.get("file_name") or "document")))
    return out


KIND = ConnectorKind(
    name="telegram",
    settings=TelegramSettings,
    adapter=TelegramConnector,
    check_address=check_address,
    chat_address=chat_address,
    # The webhook's secret_token, repeated by Telegram in a header.
    ingress_security={"telegramSecret": {"type": "apiKey", "in": "header", "name": "X-Telegram-Bot-Api-Secret-Token"}},
)
