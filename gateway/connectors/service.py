"""The connector service: effective connectors (file + daemon), CRUD transactions, secrets, actors, outbox, status."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from actors.base import Address, BusyError, DeadActorError, ask
from actors.connector import (
    Connector,
    ConnectorRegistry,
    Deliver,
    DeliveryRequest,
    DeliveryResult,
    IngressDispatcher,
)
from actors.events import TurnOutcomes
from actors.messages import RouterMsg
from actors.outbox import OutboxActor, OutboxMsg, OutboxPolicy, TurnFinished, send_kick
from actors.store import StorageUnavailableError, Store
from actors.supervisor import ChildSpec, Registry, Restart, RestartPolicy, Supervisor, service
from gateway.connectors.base import Context, SidecarTokens
from gateway.connectors.model import (
    ConnectorConfig,
    SecretMeta,
    check_name,
    check_secret_input,
    default_slot,
    secret_view,
    settings_to_dict,
)
from gateway.connectors.registry import KINDS, check_kind, kind_of, parse_settings
from gateway.errors import ConflictError, NotFoundError, ValidationFailedError
from gateway.logs import redactor
from gateway.outbound import OutboundPolicy
from storage import connectors as conn_db
from storage import outbox as outbox_db
from storage import secrets as secret_db
from storage.clock import now_ms
from storage.events import EventRow

log = logging.getLogger("gateway.connectors")
BACKLOG_POLL = 2.0  # seconds between two reads of the outbox backlog shown in /api/status


def file_connectors(raw: dict[str, dict[str, dict[str, Any]]]) -> dict[str, ConnectorConfig]:
    """Parse `[connectors.<kind>.<name>]` sections; secrets given as `{value}` stay in memory only."""
    out: dict[str, ConnectorConfig] = {}
    for kind, named in raw.items():
        secret_fields = kind_of(kind).secret_fields
        if not isinstance(named, dict):
            raise ValidationFailedError(f"connectors.{kind} must be a table of named connectors")
        for name, data in named.items():
            check_name(name)
            what = f"connectors.{kind}.{name}"
            if not isinstance(data, dict):
                raise ValidationFailedError(f"{what} must be a table")
            data = dict(data)
            file_secrets: dict[str, str] = {}
            for f in secret_fields:
                if f not in data:
                    continue
                si = check_secret_input(f"{what}.{f}", data.pop(f))
                if si is None:
                    continue
                if si.env is not None:
                    data[f] = {"source": "env", "env": si.env}
                elif si.value is not None:
                    file_secrets[f] = si.value
                    redactor.add(si.value)
                    data[f] = {"source": "value"}
                else:
                    data[f] = {"source": "secret_ref", "secret_ref": si.secret_ref}
            settings = parse_settings(kind, data, what=what)
            out[f"{kind}/{name}"] = ConnectorConfig(kind, name, "file", settings, file_secrets)
    return out


class ConnectorService:
    """Owns the connector actors, the ingress dispatcher and the outbox; the HTTP routes call into it."""

    def __init__(
        self,
        *,
        store: Store,
        router: Address[RouterMsg],
        registry: Registry,
        files: dict[str, ConnectorConfig],
        files_dir: Path,
        gateway_url: Callable[[], str],
        listening: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint,
        outbox_policy: OutboxPolicy | None = None,
        restart_policy: RestartPolicy | None = None,
        outbound: OutboundPolicy | None = None,
        outcomes: TurnOutcomes,
    ) -> None:
        self.store = store
        self.outcomes = outcomes  # the runtime's: each turn's reply, read at its end
        self.outbound = outbound or OutboundPolicy()
        self.files = files
        self.files_dir = files_dir
        self.gateway_url = gateway_url
        self.listening = listening
        self.registry = registry
        self.actors = ConnectorRegistry(registry, policy=restart_policy)
        self.dispatcher = IngressDispatcher(store, router)
        self.tokens = SidecarTokens()
        self.outbox_policy = outbox_policy or OutboxPolicy()
        self.outbox_address: Address[OutboxMsg] | None = None
        self.outbox: OutboxActor | None = None
        self.daemon: dict[str, ConnectorConfig] = {}
        self.contexts: dict[str, Context] = {}
        self._pending: dict[str, int] = {}

    # ---- lifecycle ----

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One life: the registry, dispatcher, outbox, backlog poll and every configured connector, each a child of
        this service's supervisor; serve until cancelled. A restart begins again from what is stored."""
        async with Supervisor("connector-service") as sup:
            reg = self.registry
            await sup.start(service("connector-registry", self.actors.run, registry=reg, announces=True))
            await sup.start(service("ingress-dispatcher", self.dispatcher.run, registry=reg, announces=True))
            self.outbox = OutboxActor(self.store, self.deliver, self.outbox_policy)
            spec: ChildSpec[OutboxMsg] = ChildSpec(
                name="outbox",
                run=self.outbox.run,
                capacity=4096,
                registry=reg,
                policy=RestartPolicy(Restart.PERMANENT, max_restarts=20, window=300.0, backoff=0.5, max_backoff=5.0),
            )
            self.outbox_address = (await sup.start(spec)).address
            outbox = self.outbox_address
            self.dispatcher.on_refused = lambda: send_kick(outbox)
            for row in await self.store.call(conn_db.list_connectors):
                ref = f"{row.kind}/{row.name}"
                if ref in self.files:
                    log.warning("connector %s is declared in the config file; the stored copy is ignored", ref)
                    continue
                try:
                    settings = parse_settings(row.kind, row.settings, what=f"stored connector {ref}")
                except (ValidationFailedError, NotFoundError) as exc:  # invalid, or of a kind no longer registered
                    log.error("%s", exc.message)
                    continue
                self.daemon[ref] = ConnectorConfig(row.kind, row.name, "daemon", settings)
            for ref in sorted({**self.files, **self.daemon}):
                await self.actors.start(ref, partial(self._make, ref))
            await sup.start(service("connector-backlog", self._refresh_backlog, registry=reg))
            task_status.started()
            await trio.sleep_forever()

    def config_of(self, ref: str) -> ConnectorConfig | None:
        return self.files.get(ref) or self.daemon.get(ref)

    def refs(self) -> list[str]:
        """Every configured connector (file and daemon) as `kind/name`, sorted."""
        return sorted({**self.files, **self.daemon})

    def chat_reply_target(self, transport: str, chat_id: str, topic_id: str) -> dict[str, Any] | None:
        """Where a chat of a configured connector (`transport` = `kind:name`) replies by itself: a reply target for
        its address (the kind's `chat_address`), or None when the connector is not configured or its kind has no
        chat addresses."""
        kind, _, name = transport.partition(":")
        found = KINDS.get(kind)
        if found is None or found.chat_address is None or not name or self.config_of(f"{kind}/{name}") is None:
            return None
        return {"plugin": kind, "connector": name, "address": found.chat_address(chat_id, topic_id)}

    async def _make(self, ref: str) -> Connector:
        cfg = self.config_of(ref)
        if cfg is None:
            raise RuntimeError(f"connector {ref} is no longer configured")
        secrets = await self._resolve_secrets(cfg)
        ctx = Context(
            config=cfg,
            secrets=secrets,
            store=self.store,
            wake_dispatcher=self.dispatcher.wake,
            files_dir=self.files_dir,
            gateway_url=self.gateway_url,
            wait_listening=self.listening,
            slot_value=self._slot_value,
            sidecar_tokens=self.tokens,
            outbound=self.outbound,
            kinds=KINDS,
        )
        self.contexts[ref] = ctx
        return kind_of(cfg.kind).adapter(ctx)

    async def _slot_value(self, slot: str) -> str | None:
        value = await self.store.call(secret_db.get_secret, slot)
        if value:
            redactor.add(value)
        return value

    async def _resolve_secrets(self, cfg: ConnectorConfig) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in kind_of(cfg.kind).secret_fields:
            meta: SecretMeta | None = getattr(cfg.settings, f)
            value: str | None = None
            if meta is None:
                continue
            if meta.source == "env" and meta.env:
                value = os.environ.get(meta.env)
            elif f in cfg.file_secrets:
                value = cfg.file_secrets[f]
            elif meta.secret_ref:
                value = await self._slot_value(meta.secret_ref)
            if value:
                redactor.add(value)
                out[f] = value
            else:
                log.warning("connector %s: secret %s is configured but has no value", cfg.ref, f)
        return out

    async def _refresh_backlog(self) -> None:
        # The status page's delivery backlog. Storage refusing (frozen, read-only) backs the poll off; the last
        # count stays shown meanwhile.
        delay = BACKLOG_POLL
        while True:
            try:
                self._pending = await self.store.call(outbox_db.pending_count)
                delay = BACKLOG_POLL
            except StorageUnavailableError as exc:
                log.warning("connector backlog not refreshed: %s; next try in %.0f s", exc, delay)
                delay = min(delay * 2, 60.0)
            await trio.sleep(delay)

    # ---- views and CRUD ----

    def _view(self, cfg: ConnectorConfig, present: set[str]) -> dict[str, Any]:
        d = settings_to_dict(cfg.settings)
        for f in kind_of(cfg.kind).secret_fields:
            meta: SecretMeta | None = getattr(cfg.settings, f)
            ok = meta is not None and (
                (meta.source == "env" and bool(meta.env) and meta.env in os.environ)
                or f in cfg.file_secrets
                or (meta.secret_ref is not None and meta.secret_ref in present)
            )
            d[f] = secret_view(meta, resolvable=ok)
        return {"kind": cfg.kind, "name": cfg.name, "source": cfg.source, **d}

    async def _present_slots(self) -> set[str]:
        return {slot for slot, _ in await self.store.call(secret_db.list_slots)}

    async def list_views(self) -> list[dict[str, Any]]:
        present = await self._present_slots()
        configs = {**self.daemon, **self.files}
        return [self._view(configs[ref], present) for ref in sorted(configs)]

    async def view(self, kind: str, name: str) -> dict[str, Any]:
        cfg = self.config_of(f"{check_kind(kind)}/{name}")
        if cfg is None:
            raise NotFoundError(f"no {kind} connector named {name!r}")
        return self._view(cfg, await self._present_slots())

    async def put(self, kind: str, name: str, body: Any) -> tuple[dict[str, Any], bool]:
        """Field-aware upsert: create the connector or update only the fields present in `body`."""
        ref = f"{check_kind(kind)}/{check_name(name)}"
        if ref in self.files:
            raise ConflictError(f"connector {ref} is declared in the config file; change it there")
        if not isinstance(body, dict):
            raise ValidationFailedError("the body must be a JSON object of connector fields")
        known = set(kind_of(kind).settings.__struct_fields__)
        unknown = sorted(k for k in body if k not in known)
        if unknown:
            raise ValidationFailedError(
                f"unknown field(s) for a {kind} connector: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        # Decode secret inputs before the transaction so a bad shape never reaches storage.
        secret_inputs = {f: check_secret_input(f, body[f]) for f in kind_of(kind).secret_fields if f in body}
        for si in secret_inputs.values():
            if si is not None and si.value is not None:
                redactor.add(si.value)

        def txn(conn: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            row = conn_db.get_connector(conn, kind, name)
            merged: dict[str, Any] = dict(row.settings) if row is not None else {}
            merged.update({k: v for k, v in body.items() if k not in secret_inputs})
            now = now_ms()
            for f, si in secret_inputs.items():
                if si is None:
                    merged.pop(f, None)
                    secret_db.delete_secret(conn, default_slot(kind, name, f))
                elif si.env is not None:
                    merged[f] = {"source": "env", "env": si.env}
                elif si.value is not None:
                    slot = si.secret_ref or default_slot(kind, name, f)
                    secret_db.put_secret(conn, slot, si.value, now_ms=now)
                    merged[f] = {"source": "value", "secret_ref": slot}
                else:
                    assert si.secret_ref is not None
                    if not secret_db.secret_exists(conn, si.secret_ref):
                        raise ValidationFailedError(
                            f"field {f}: secret slot {si.secret_ref!r} does not exist; "
                            "create it with PUT /v1/runtime/secrets/{slot}"
                        )
                    merged[f] = {"source": "secret_ref", "secret_ref": si.secret_ref}
            settings = parse_settings(kind, merged, what=f"{kind} connector {name}")
            persona = settings.session_policy.persona_id
            if persona is not None and not conn_db.persona_exists(conn, persona):
                raise ValidationFailedError(f"session_policy.persona_id: no persona {persona!r} exists")
            stored = settings_to_dict(settings)
            created = conn_db.put_connector(conn, kind, name, stored, now_ms=now)
            return stored, created

        stored, created = await self.store.call(txn)
        self.daemon[ref] = ConnectorConfig(kind, name, "daemon", parse_settings(kind, stored))
        await self.actors.start(ref, partial(self._make, ref))
        return await self.view(kind, name), created

    async def put_secret(self, slot: str, value: str) -> list[str]:
        """Store or rotate a slot, then restart every connector reading it so the new value applies at once."""
        redactor.add(value)
        await self.store.call(secret_db.put_secret, slot, value, now_ms=now_ms())
        readers = [
            ref
            for ref, cfg in sorted({**self.daemon, **self.files}.items())
            if any(
                (meta := getattr(cfg.settings, f)) is not None and meta.secret_ref == slot and f not in cfg.file_secrets
                for f in kind_of(cfg.kind).secret_fields
            )
        ]
        for ref in readers:
            await self.actors.start(ref, partial(self._make, ref))
        return readers

    async def delete(self, kind: str, name: str) -> None:
        """Delete a daemon connector; refused (409) while cron jobs or reply targets reference it."""
        ref = f"{check_kind(kind)}/{name}"
        if ref in self.files:
            raise ConflictError(f"connector {ref} is declared in the config file; remove it there")
        if ref not in self.daemon:
            raise NotFoundError(f"no {kind} connector named {name!r}")
        users = [
            other
            for other, cfg in {**self.files, **self.daemon}.items()
            if other != ref and _targets_name(cfg, kind, name)
        ]

        def txn(conn: sqlite3.Connection) -> None:
            crons = conn_db.cron_references(conn, ref)
            sessions = conn_db.reply_target_references(conn, kind, name)
            if crons or sessions or users:
                parts = []
                if crons:
                    parts.append(f"{crons} cron job(s)")
                if sessions:
                    parts.append(f"reply targets of {sessions} session(s)")
                if users:
                    parts.append(f"reply targets of connector(s) {', '.join(users)}")
                raise ConflictError(
                    f"connector {ref} is still referenced by {', '.join(parts)}; remove those references first"
                )
            conn_db.delete_connector(conn, kind, name)
            for f in kind_of(kind).secret_fields:
                secret_db.delete_secret(conn, default_slot(kind, name, f))

        await self.store.call(txn)
        self.daemon.pop(ref, None)
        self.contexts.pop(ref, None)
        await self.actors.stop(ref)

    # ---- outbox and status ----

    def on_event(self, event: EventRow) -> None:
        """Session event listener: hand each completed turn's final text to the outbox (never blocks)."""
        if event.type != "turn_ended" or not event.turn_id:
            return
        outcome = self.outcomes.get(event.turn_id)
        if outcome is not None and outcome.state == "completed" and self.outbox_address is not None:
            try:
                self.outbox_address.send_nowait(TurnFinished(event.session_id, event.turn_id, outcome.text))
            except (BusyError, DeadActorError):
                # Not lost: the outbox rescans finished turns without planned deliveries.
                log.warning("outbox busy; turn %s will be picked up by the next rescan", event.turn_id)

    async def deliver(self, ref: str, request: DeliveryRequest) -> DeliveryResult:
        address = self.actors.address_of(ref)
        if address is None:
            return DeliveryResult("retryable", f"connector {ref} is not running")
        result: DeliveryResult = await ask(address, lambda r: Deliver(request, r), timeout=60)
        if result.error:
            # The error may quote the platform's answer, which may echo our request (a token, a token URL): it is
            # stored as the delivery's last_error and shown by the API, so it is redacted before either.
            result = msgspec.structs.replace(result, error=redactor.redact(result.error))
        return result

    def status(self) -> dict[str, Any]:
        """The `connectors` status check: per connector state, last_error, restarts and backlog."""
        details: dict[str, Any] = {}
        failed = False
        for ref in sorted({**self.files, **self.daemon}):
            st = self.actors.statistics(ref)
            st["backlog"] = int(st["backlog"]) + self._pending.get(ref, 0)
            ctx = self.contexts.get(ref)
            if ctx is not None and ctx.extra:
                st.update(ctx.extra)
            # In error while given up, or waiting out a backoff after a crash (a crash loop is never "ok").
            failed = failed or st["state"] in ("failed", "restarting")
            details[ref] = st
        details["_ingress"] = {
            "dispatched": self.dispatcher.dispatched,
            "turns": self.dispatcher.turns,
            "outbox_delivered": self.outbox.delivered if self.outbox else 0,
            "outbox_dead_letter": self.outbox.dead if self.outbox else 0,
        }
        return {"status": "error" if failed else "ok", "details": details}


def _targets_name(cfg: ConnectorConfig, kind: str, name: str) -> bool:
    return any(h.plugin == kind and h.connector == name for h in cfg.settings.owner_reply_targets())
