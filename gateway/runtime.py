"""The root of the process: startup order, signals and shutdown, as nested nurseries (infra ⊃ core ⊃ edge)."""

from __future__ import annotations

import logging
import signal
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from actors.base import Address
from actors.choice import AgentChoice
from actors.events import TurnOutcomes
from actors.mcp import McpHub, McpToolBox
from actors.messages import Resolve, RouterMsg, SessionKey
from actors.providers.base import Provider
from actors.providers.cli import CliProvider
from actors.providers.echo import EchoProvider
from actors.providers.openai import OpenAIProvider, OpenAISettings, preload_httpx
from actors.router import Router, start_router
from actors.session import SessionConfig
from actors.store import Reader, Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, Registry, Restart, RestartPolicy, Supervisor, service
from actors.tools import ToolBoxes
from gateway import __version__
from gateway.config.file import Config, Paths, secret_values
from gateway.core import Runtime
from gateway.daemon.fdlimit import fit_open_files
from gateway.http import connguard, wsdeflate
from gateway.logs import redactor
from gateway.outbound import OutboundPolicy
from storage import mcp as mcp_db
from storage import messages as msg_db
from storage import sessions as sess_db
from storage import skills as a2a_db
from storage.clock import now_ms
from storage.db import open_db, open_reader, prove_writable
from storage.events import EventRow
from storage.sealing import sealer_of
from storage.usage import CapPolicy

log = logging.getLogger("gateway.runtime")


def build_providers(
    config: Config, workspace: Path | None = None, outbound: OutboundPolicy | None = None
) -> dict[str, Provider]:
    """Instantiate the configured providers; `echo` is always present. `cli` runs in `workspace` by default.
    The `openai` provider's requests follow `outbound` (by default: `[outbound]` of `config`)."""
    outbound = OutboundPolicy(config.outbound.allow) if outbound is None else outbound
    o = config.providers.openai
    redactor.add(o.api_key)
    # agent.model names the default provider's model; for the others it has no meaning.
    model = config.agent.model if config.agent.provider == "openai" and config.agent.model else o.model
    openai = OpenAIProvider(
        OpenAISettings(
            base_url=o.base_url,
            api_key=o.api_key,
            model=model,
            models=tuple(o.models),
            temperature=o.temperature,
            max_tokens=o.max_tokens,
            system_prompt=o.system_prompt,
            context_tokens=o.context_tokens,
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            max_retries=o.max_retries,
            max_iterations=o.max_iterations,
            stream_usage=o.stream_usage,
        ),
        http_client=outbound.client,
    )
    providers: dict[str, Provider] = {
        "echo": EchoProvider(delay=config.providers.echo.delay_ms / 1000),
        "openai": openai,
    }
    cli = config.providers.cli
    if cli.argv or config.agent.provider == "cli":
        workdir = cli.workdir or (str(workspace) if workspace is not None else None)
        providers["cli"] = CliProvider(cli.argv, workdir=workdir, env=cli.env, grace=cli.grace)
    return providers


def recover(conn: sqlite3.Connection) -> int:
    """After a crash: turns left `running` can never finish, so mark them `interrupted`."""
    conn.execute("BEGIN IMMEDIATE")
    n = msg_db.interrupt_running_turns(conn, now_ms=now_ms())
    conn.execute("COMMIT")
    return n


async def _resume_queued(store: Store, router: Address[RouterMsg]) -> None:
    """Wake every session that still has queued turns so they run after a restart."""

    def keys(conn: sqlite3.Connection) -> list[SessionKey]:
        out = []
        for sid in msg_db.sessions_with_queued_turns(conn):
            row = sess_db.get_session(conn, sid)
            if row is not None:
                out.append(SessionKey(row.transport, row.chat_id, row.topic_id))
        return out

    from actors.base import Reply

    for key in await store.call(keys):
        await router.send(Resolve(key, Reply()))


async def watch_signals(
    shutdown: trio.Event,
    *,
    on_signal: Callable[[int], None] | None = None,
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    """First of `signals` (SIGINT/SIGTERM; the daemon adds SIGUSR1 for restart) sets `shutdown`; then the
    receiver closes so a second Ctrl-C interrupts for real."""
    with trio.open_signal_receiver(*signals) as received:
        async for signum in received:
            log.info("signal %s received: shutting down", signal.Signals(signum).name)
            if on_signal is not None:
                on_signal(signum)
            shutdown.set()
            return


async def run(
    config: Config,
    paths: Paths,
    *,
    token: str,
    app_factory: Callable[[Runtime], Any] | None = None,
    handle_signals: bool = False,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open storage, start the actors, serve HTTP until `shutdown`, then stop edge, core and infra in turn."""
    redactor.add(token)
    for secret in secret_values(config):
        redactor.add(secret)
    config = fit_open_files(config)
    shutdown = trio.Event() if shutdown is None else shutdown  # an Event has no truth value
    conn = open_db(paths.db_file, synchronous=config.storage.synchronous, key_file=paths.secrets_key_file)
    interrupted = recover(conn)
    if interrupted:
        log.warning("marked %d turn(s) interrupted by the previous stop", interrupted)
    registry = Registry()
    if config.agent.provider == "cli" or config.providers.cli.argv:
        paths.workspace.mkdir(parents=True, exist_ok=True)  # the cli provider's default working folder
    outbound = OutboundPolicy(config.outbound.allow)
    providers = build_providers(config, paths.workspace, outbound)
    if config.agent.provider == "openai":
        preload_httpx()
    choice = AgentChoice(config.agent.provider, providers)
    st = config.storage
    sealer = sealer_of(conn)  # the reader and a reopened connection open the same sealed secrets
    reader = Reader(partial(open_reader, paths.db_file, sealer=sealer))
    store_actor = StoreActor(
        conn,
        max_batch=st.max_batch,
        reopen=partial(prove_writable, paths.db_file, synchronous=st.synchronous, sealer=sealer),
        probe_interval=st.probe_interval,
        reader=reader,
    )
    try:
        # The root: two supervisors (infra, core) and the edge. Every long-lived task is a supervised child (a task
        # named `supervised:<name>`) or inside one; a child that fails for good is marked failed, never escalated,
        # so only this function decides when the process ends.
        async with Supervisor("infra") as infra:
            if handle_signals:
                infra.start_soon(service("signals", partial(watch_signals, shutdown), RestartPolicy(Restart.TRANSIENT)))
            store_spec: ChildSpec[StoreMsg] = ChildSpec(
                name="store",
                run=store_actor.run,
                capacity=8192,
                registry=registry,
                policy=RestartPolicy(Restart.PERMANENT, max_restarts=5, window=60.0),
            )
            store = Store(
                (await infra.start(store_spec)).address, timeout=st.timeout, stats=store_actor.stats, reader=reader
            )
            listeners: list[Callable[[EventRow], None]] = []
            outcomes = TurnOutcomes()

            def on_event(event: EventRow) -> None:
                outcomes.on_event(event)  # first: a listener told of a turn's end reads its outcome there
                for listener in listeners:
                    try:
                        listener(event)
                    except Exception:
                        log.exception("event listener %r failed", listener)

            async with Supervisor("core") as core:
                router = Router(
                    on_event=on_event,
                    store=store,
                    choose=choice.resolve,
                    session_config=SessionConfig(
                        idle_timeout=config.sessions.idle_timeout,
                        subscribed_idle_timeout=config.sessions.subscribed_idle_timeout,
                        max_queue=config.sessions.max_queue,
                        history_limit=config.sessions.history_limit,
                        model=None,  # each provider's own default, which the REST API may change
                        caps=CapPolicy(config.usage.daily_token_cap, config.usage.unowned_daily_token_cap),
                    ),
                    registry=registry,
                )
                router_address = await start_router(core, router)
                runtime = Runtime(
                    config=config,
                    paths=paths,
                    token=token,
                    store=store,
                    router=router,
                    router_address=router_address,
                    registry=registry,
                    providers=providers,
                    shutdown=shutdown,
                    choice=choice,
                    event_listeners=listeners,  # the same list `on_event` walks, so features can add to it
                    outcomes=outcomes,
                    outbound=outbound,
                )
                # Live (in memory), parked (no actor, a client still listening) and so hibernated sessions, for
                # `GET /api/status`, `gateway status` and the memory benchmark.
                runtime.status_checks["sessions"] = lambda: {
                    "status": "ok",
                    "details": {
                        **msgspec.structs.asdict(router.statistics()),
                        "parked_sessions": router.parked_sessions,
                    },
                }
                runtime.status_checks["actors"] = registry.status_check
                await _resume_queued(store, router_address)
                await start_services(runtime, core)
                app: Any
                if app_factory is None and not config.cors.enabled:
                    from gateway.http.front import LazyApp

                    # Starlette is imported by the first request other than /health and /ws (issue 17: ~4 MiB).
                    app = LazyApp(runtime, partial(_starlette_app, runtime))
                    websocket = app.websocket_ahead()
                else:
                    from gateway.http.asgi import build_app, websocket_ahead

                    app = (app_factory or build_app)(runtime)
                    websocket = websocket_ahead(app)
                connguard.install()  # one connection's internal error must not stop the server
                wsdeflate.install()  # small /ws frames are not worth compressing
                hc = HypercornConfig()
                hc.bind = [_bind(config.server.host, config.server.port)]
                hc.graceful_timeout = config.server.graceful_timeout
                hc.accesslog = None
                hc.errorlog = logging.getLogger("hypercorn.error")
                hc.websocket_max_message_size = 16 * 1024 * 1024
                # Protocol-level pings keep idle /ws connections alive through NATs and find dead peers.
                hc.websocket_ping_interval = config.ws.ping_interval or None
                hc.keep_alive_timeout = 5
                inflight = InFlight(app, websocket)
                async with trio.open_nursery() as edge:
                    runtime.ws_tasks = await edge.start(_connection_helpers)
                    runtime.binds = await edge.start(
                        partial(serve, cast(Any, inflight), hc, shutdown_trigger=shutdown.wait)
                    )
                    runtime.listening.set()
                    edge.start_soon(_end_edge_when_drained, edge.cancel_scope, shutdown, inflight, registry)
                    log.info("gateway %s listening on %s", __version__, ", ".join(runtime.binds))
                    task_status.started(runtime)
                core.cancel("gateway shutdown")
            infra.cancel("gateway shutdown")
    finally:
        # The writer's thread is never abandoned (a commit runs to its end), so it is idle here; a read may still
        # run in an abandoned thread, and the reader closes its connection only once that read has returned.
        for close in (store_actor.conn.close, reader.close):
            try:
                close()
            except sqlite3.Error as exc:  # a disk gone read-only: nothing left to write anyway
                log.warning("closing the database: %s", exc)
        log.info("gateway stopped")


async def _connection_helpers(task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED) -> None:
    """The nursery /ws connections start their helpers in; each connection ends its own before it returns, so it is
    empty once the edge has drained, and the edge's cancellation ends it."""
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


def _starlette_app(runtime: Runtime) -> Any:
    """The gateway's Starlette app (routes, middleware), built by the first request that needs it."""
    from gateway.http.asgi import build_app

    return build_app(runtime)


class InFlight:
    """ASGI wrapper counting the HTTP requests and WebSockets being served, so shutdown knows when all are done.

    `websocket`: what serves `/ws` directly, ahead of `app`'s middleware (its frames would stay on every idle
    socket's task)."""

    def __init__(self, app: Any, websocket: Any = None) -> None:
        self.app = app
        self.websocket = websocket
        self.active = 0
        self._idle = trio.Event()
        self._idle.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        app = self.app
        if self.websocket is not None and scope["type"] == "websocket" and scope["path"] == "/ws":
            app = self.websocket
        if self.active == 0:
            # A new event only when going from idle to busy: `wait_idle` may be waiting on this one, and a request
            # that starts beside another must not swap it for one nobody sets (a stop that never ended).
            self._idle = trio.Event()
        self.active += 1
        try:
            await app(scope, receive, send)
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Block until nothing is being served."""
        while self.active:
            await self._idle.wait()


async def _end_edge_when_drained(
    edge: trio.CancelScope, shutdown: trio.Event, inflight: InFlight, registry: Registry
) -> None:
    """Once shutting down, tell every `/ws` connection to go (1001); once every request and socket has been
    answered, stop hypercorn at once.

    Hypercorn drains for `graceful_timeout` itself, but its WebSocket ping task sleeps out its interval after the
    socket has closed, which would hold every stop with a connected client for the whole graceful timeout.
    """
    await shutdown.wait()
    # One watcher for all connections, not a task in each of them waiting for this.
    for connection in registry.addresses("connection:"):
        going_away = getattr(connection, "going_away", None)
        if going_away is not None:
            going_away()
    await inflight.wait_idle()
    edge.cancel()


async def start_services(runtime: Runtime, core: Supervisor) -> None:
    """Start the core services beside the router (connectors, outbox, scheduler), each a child of `core`; each
    feature adds one line."""
    from gateway.agent import live_config, tool_prefs

    await tool_prefs.load(runtime)
    await live_config.load(runtime)
    await start_mcp(runtime, core)
    await _start_connectors(runtime, core)
    await _start_rest(runtime, core)
    await runtime.skills.refresh(runtime.store)
    openai = runtime.providers.get("openai")
    if isinstance(openai, OpenAIProvider):
        openai.context = runtime.skills.contexts


async def start_mcp(runtime: Runtime, core: Supervisor) -> None:
    """Connect the enabled MCP servers and offer their tools, and the registered A2A agents, to the `openai`
    provider."""
    hub = McpHub(registry=runtime.registry, http_client=runtime.outbound.client2)
    await core.start(service("mcp", hub.run, announces=True))
    runtime.mcp = hub
    servers = await runtime.store.call(mcp_db.list_servers)
    for server in servers:
        for secret in [*server.env.values(), *server.headers.values()]:
            redactor.add(secret)
    hub.apply(servers)
    openai = runtime.providers.get("openai")
    from gateway.agent.a2a import A2AAgents
    from gateway.agent.tool_prefs import prefs_of

    prefs = prefs_of(runtime)
    runtime.services.a2a = agents = A2AAgents(runtime.outbound, hidden=prefs.a2a_hidden)
    agents.reload(await runtime.store.call(a2a_db.list_a2a))
    if isinstance(openai, OpenAIProvider):
        # Each turn sees only the MCP servers and A2A agents its session's owner has not switched off
        # (/api/user/tools/mcp, /api/user/tools/a2a).
        openai.tools = ToolBoxes([McpToolBox(hub, hidden=prefs.mcp_hidden), agents])

    def check() -> dict[str, Any]:
        status = hub.status()
        bad = [n for n, s in status.items() if s["state"] in ("failed", "error")]
        return {"status": "error" if bad else "ok", "details": status}

    runtime.status_checks["mcp"] = check


async def _start_connectors(runtime: Runtime, core: Supervisor) -> None:
    # Issue 4: connector actors, the ingress dispatcher and the reply outbox.
    from actors.outbox import OutboxPolicy
    from gateway.connectors.service import ConnectorService, file_connectors

    cfg = runtime.config
    connectors = ConnectorService(
        store=runtime.store,
        router=runtime.router_address,
        registry=runtime.registry,
        files=file_connectors(cfg.connectors),
        files_dir=runtime.paths.workspace / "connectors",
        gateway_url=lambda: runtime.binds[0] if runtime.binds else f"http://{cfg.server.host}:{cfg.server.port}",
        listening=runtime.listening.wait,
        outbox_policy=OutboxPolicy(
            max_attempts=cfg.outbox.max_attempts,
            backoff=cfg.outbox.backoff,
            max_backoff=cfg.outbox.max_backoff,
            timeout=cfg.outbox.timeout,
        ),
        outbound=runtime.outbound,
        outcomes=runtime.outcomes,
    )
    runtime.connectors = connectors
    runtime.event_listeners.append(connectors.on_event)

    def notify_on_end(key: SessionKey, accepted: Any) -> None:
        # The turns outside parties start (a connector's chat, a webhook): see BackgroundTurns.watch_ingress.
        background = runtime.services.background
        if background is not None:
            background.watch_ingress(key, accepted.turn_id)

    connectors.dispatcher.on_turn = notify_on_end
    runtime.status_checks["connectors"] = connectors.status
    await core.start(service("connector-service", connectors.run, registry=runtime.registry, announces=True))


async def _start_rest(runtime: Runtime, core: Supervisor) -> None:
    # Issue 6: users, rate limits, notifications, the cron scheduler.
    from gateway.features import start_rest_services

    await start_rest_services(runtime, core)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
