"""What the edges see of the running gateway: `Runtime` (built by runtime.run) and its typed `Services`.

It sits low in the import graph: it imports the config, actors/ and storage/ types and the few gateway modules its
fields are made of, never an edge (routes, `/ws`) nor runtime.py, so that everything the edges hand a `Runtime` to
can import it without importing the startup order back. The features' types in `Services` are imported for type
checking only: those modules take a `Runtime` themselves (tests/test_layout.py leaves `TYPE_CHECKING` imports out
of its cycle check for that reason, and only for that).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio

from actors.base import Address
from actors.broadcast import Broadcast
from actors.choice import AgentChoice
from actors.events import TurnOutcomes
from actors.mcp import McpHub
from actors.messages import RouterMsg
from actors.providers.base import Provider
from actors.router import Router
from actors.scheduler import Scheduler
from actors.store import Store
from actors.supervisor import Registry
from gateway import __version__
from gateway.agent.skills import SkillCatalog
from gateway.config.file import Config, Paths
from gateway.connectors.service import ConnectorService
from gateway.outbound import OutboundPolicy
from storage.events import EventRow

if TYPE_CHECKING:
    from gateway.agent.a2a import A2AAgents
    from gateway.agent.live_config import LiveConfig
    from gateway.agent.tool_prefs import ToolPrefs
    from gateway.http.reststate import RestState
    from gateway.http.session_feed import SessionsFeed
    from gateway.notify import BackgroundTurns

S = TypeVar("S")


class Services(msgspec.Struct):
    """The features `start_services` starts beside the router, each None until started (tests may start fewer)."""

    rest: RestState | None = None  # auth state and rate limits of the REST API (gateway.features)
    background: BackgroundTurns | None = None  # notifications when an unwatched turn ends
    scheduler: Scheduler | None = None  # cron jobs
    live_config: LiveConfig | None = None  # the agent settings changed over the API (gateway.agent.live_config)
    tool_prefs: ToolPrefs | None = None  # users' MCP and A2A switch-offs (gateway.agent.tool_prefs)
    a2a: A2AAgents | None = None  # the registered A2A agents, offered to the model as tools (gateway.agent.a2a)
    sessions_feed: SessionsFeed | None = None  # made by the first session-list stream (gateway.http.session_feed)
    # `GET /api/status`'s database integrity check: one scan at a time, its verdict reused for a while.
    integrity_lock: trio.Lock = msgspec.field(default_factory=trio.Lock)
    integrity_verdict: tuple[float, str] | None = None


def started(service: S | None, what: str) -> S:
    """`service`, which startup has made; RuntimeError (a bug, never a client's mistake) when it has not."""
    if service is None:
        raise RuntimeError(f"{what} is not started; runtime.start_services starts it")
    return service


class Runtime(msgspec.Struct):
    """What the edges need from the running process; built by `run()` and handed to the ASGI app."""

    config: Config
    paths: Paths
    token: str
    store: Store
    router: Router
    router_address: Address[RouterMsg]
    registry: Registry
    providers: dict[str, Provider]
    shutdown: trio.Event
    choice: AgentChoice
    started_wall: float = msgspec.field(default_factory=time.time)
    started_monotonic: float = msgspec.field(default_factory=time.monotonic)
    connections: int = 0
    binds: list[str] = msgspec.field(default_factory=list)
    # Set once the edge listens on `binds`: what calls back into the gateway (sidecars) starts after it.
    listening: trio.Event = msgspec.field(default_factory=trio.Event)
    # Called for every session event, synchronously, right after it is sequenced (keep them cheap).
    event_listeners: list[Callable[[EventRow], None]] = msgspec.field(default_factory=list)
    # Each turn's outcome, fed every session event before `event_listeners` (which read it at a turn's end).
    outcomes: TurnOutcomes = msgspec.field(default_factory=TurnOutcomes)
    notifications: Broadcast[dict[str, Any]] = msgspec.field(default_factory=Broadcast)
    # name -> check returning {"status": "ok"|"error", "details": ...}; `GET /api/status` shows them all.
    status_checks: dict[str, Callable[[], dict[str, Any]]] = msgspec.field(default_factory=dict)
    mcp: McpHub | None = None
    skills: SkillCatalog = msgspec.field(default_factory=SkillCatalog)
    # Where /ws connections run their helper tasks (a sender, an abort), set by `run()` before the edge serves:
    # one nursery for all of them, not one per socket (see gateway/ws/connection.py).
    ws_tasks: trio.Nursery | None = None
    # The connector service (issue 4), set by start_services.
    connectors: ConnectorService | None = None
    # The features started by `start_services`, one typed field each.
    services: Services = msgspec.field(default_factory=Services)
    # Where requests made on someone's behalf may go ([outbound] allow); every outbound HTTP client comes from it.
    outbound: OutboundPolicy = msgspec.field(default_factory=OutboundPolicy)

    @property
    def version(self) -> str:
        return __version__

    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic

    def active_provider(self) -> Provider:
        return self.choice.resolve().provider

    def active_model(self) -> str:
        """The model the active provider uses (its own default, which `POST /api/app-config/llm` may change)."""
        return self.choice.resolve().model_name

    def effective(self, provider: str | None, model: str | None) -> tuple[str, str]:
        """The provider and model a session's next turn uses given its pin: `AgentChoice.resolve`, which the
        session actor itself asks at the turn's start."""
        chosen = self.choice.resolve((provider, model))
        return chosen.name, chosen.model_name
