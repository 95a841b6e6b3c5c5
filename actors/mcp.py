"""MCP servers as tools: one supervised connection actor per enabled server, and the ToolBox the model calls."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

from actors.base import Address, Reply, ask
from actors.supervisor import Child, ChildSpec, Registry, Restart, RestartPolicy, Supervisor, describe_error
from storage.mcp import McpServerRow

log = logging.getLogger("gateway.mcp")


class McpTool(msgspec.Struct, frozen=True):
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]


class CallTool(msgspec.Struct, frozen=True):
    tool: str
    arguments: dict[str, Any]
    reply: Reply[str]


class ServerState(msgspec.Struct):
    state: str = "starting"  # starting | connected | error | failed | stopped
    last_error: str | None = None
    restarts: int = 0
    tools: list[McpTool] = msgspec.field(default_factory=list)
    child: Child[CallTool] | None = None

    @property
    def address(self) -> Address[CallTool] | None:
        return self.child.address if self.child is not None else None


McpClientFactory = Callable[..., Any]  # (*, trusted: Sequence[str], **httpx2.AsyncClient arguments) -> AsyncClient


def plain_mcp_client(*, trusted: Sequence[str] = (), **kwargs: Any) -> Any:
    """An httpx2 client without an outbound policy (a hub used outside the gateway, as in tests)."""
    import httpx2

    return httpx2.AsyncClient(**kwargs)


@asynccontextmanager
async def _connect(server: McpServerRow, make_client: McpClientFactory) -> AsyncIterator[Any]:
    """Open an MCP ClientSession over the server's transport (the SDK is imported only when needed)."""
    from mcp.client.session import ClientSession

    # A URL the owner set may be private (a local MCP server); one an admin account set must be public.
    trusted = [server.url] if server.url_by_owner else []
    if server.transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=server.command, args=server.args, env=server.env or None)
        transport = stdio_client(params)
    elif server.transport == "sse":
        import httpx2
        from mcp.client.sse import sse_client

        def factory(headers: Any = None, timeout: Any = None, auth: Any = None) -> Any:
            # The SDK's own defaults: 30 s, and 300 s between two events of the stream.
            timeout = timeout if timeout is not None else httpx2.Timeout(30.0, read=300.0)
            return make_client(trusted=trusted, headers=headers, timeout=timeout, auth=auth)

        transport = sse_client(server.url, headers=server.headers or None, httpx_client_factory=factory)
    else:
        from mcp.client.streamable_http import streamable_http_client

        transport = streamable_http_client(server.url, http_client=make_client(trusted=trusted, headers=server.headers))
    async with transport as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        yield session


def _text(result: Any) -> str:
    parts = [getattr(c, "text", None) for c in getattr(result, "content", [])]
    text = "\n".join(p for p in parts if p) or str(getattr(result, "structured_content", "") or "")
    return f"error: {text}" if getattr(result, "is_error", False) else text


class McpHub:
    """Keeps one connection per enabled MCP server; `apply()` makes the live set match the configuration."""

    def __init__(
        self,
        *,
        call_timeout: float = 60.0,
        registry: Registry | None = None,
        policy: RestartPolicy | None = None,
        http_client: McpClientFactory = plain_mcp_client,
    ) -> None:
        self.call_timeout = call_timeout
        self.http_client = http_client
        self.registry = registry
        self.policy = policy or RestartPolicy(Restart.PERMANENT, max_restarts=5, window=60.0, backoff=1.0)
        self.servers: dict[str, ServerState] = {}
        self._configs: dict[str, McpServerRow] = {}
        self._supervisor = Supervisor("mcp", on_failed=self._failed)
        self._running = False
        self._changed = trio.Event()

    def _set(self, st: ServerState, state: str, error: str | None = None) -> None:
        st.state, st.last_error = state, error
        self._changed.set()
        self._changed = trio.Event()

    async def wait_state(self, name: str, *states: str) -> ServerState:
        """Block until server `name` is in one of `states`; return its state record."""
        while True:
            st = self.servers.get(name)
            if st is not None and st.state in states:
                return st
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[McpHub] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; every server applied so far (before this life too) gets a connection."""
        async with self._supervisor:
            self._running = True
            try:
                for name, st in self.servers.items():
                    st.child = self._supervisor.start_soon(self._spec(self._configs[name], st))
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._running = False

    def apply(self, servers: list[McpServerRow]) -> None:
        """Start newly enabled or changed servers and stop disabled or removed ones (returns at once; servers
        applied before `run` starts are connected when it does)."""
        wanted = {s.name: s for s in servers if s.enabled}
        for name in list(self.servers):
            if name not in wanted or wanted[name] != self._configs.get(name):
                st = self.servers.pop(name)
                if st.child is not None:
                    st.child.scope.cancel()
                    self._supervisor.forget(st.child.name)
                if st.state != "failed":
                    self._set(st, "stopped", st.last_error)
                self._configs.pop(name, None)
        for name, cfg in wanted.items():
            if name not in self.servers:
                self._configs[name] = cfg
                self.servers[name] = st = ServerState()
                if self._running:
                    st.child = self._supervisor.start_soon(self._spec(cfg, st))

    def _failed(self, child: Child[Any]) -> None:
        for st in self.servers.values():
            if st.child is child:
                self._set(st, "failed", st.last_error)  # visible in the listing and /api/status until re-applied

    def _spec(self, cfg: McpServerRow, st: ServerState) -> ChildSpec[CallTool]:
        async def run(inbox: trio.MemoryReceiveChannel[CallTool]) -> None:
            if st.state == "error":
                st.restarts += 1
            self._set(st, "starting")
            try:
                async with _connect(cfg, self.http_client) as session:
                    listed = await session.list_tools()
                    st.tools = [
                        McpTool(cfg.name, t.name, t.description or "", dict(t.input_schema or {})) for t in listed.tools
                    ]
                    self._set(st, "connected")
                    log.info("mcp server %s connected with %d tool(s)", cfg.name, len(st.tools))
                    async for call in inbox:
                        try:
                            call.reply.set(_text(await session.call_tool(call.tool, call.arguments)))
                        except Exception as exc:
                            # The connection is suspect: mark it before the caller hears of the failure.
                            st.tools = []
                            self._set(st, "error", describe_error(exc))
                            call.reply.fail(exc)
                            raise
            except Exception as exc:
                st.tools = []
                self._set(st, "error", describe_error(exc))
                log.warning("mcp server %s: %s", cfg.name, st.last_error)
                raise

        return ChildSpec(f"mcp:{cfg.name}", run, self.policy, registry=self.registry)

    def tools(self) -> list[McpTool]:
        """Every tool of every connected server."""
        return [t for st in self.servers.values() if st.state == "connected" for t in st.tools]

    async def call(self, server: str, tool: str, arguments: dict[str, Any]) -> str:
        """Call a tool; raises when the server is not connected or does not answer within `call_timeout`."""
        st = self.servers.get(server)
        if st is None or st.address is None or st.state != "connected":
            raise RuntimeError(f"MCP server {server!r} is not connected")
        return await ask(st.address, lambda r: CallTool(tool, arguments, r), timeout=self.call_timeout)

    def status(self) -> dict[str, Any]:
        return {
            name: {"state": st.state, "last_error": st.last_error, "restarts": st.restarts, "tools": len(st.tools)}
            for name, st in self.servers.items()
        }


_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def function_name(server: str, tool: str) -> str:
    """The name a model sees: `server__tool`, limited to OpenAI's `^[a-zA-Z0-9_-]{1,64}$`."""
    return _UNSAFE.sub("_", f"{server}__{tool}")[:64]


class McpToolBox:
    """Offers the hub's tools to the `openai` provider as functions, and routes its calls back.

    `hidden(owner)` names the servers a user switched off; `scoped(owner)` is the box one turn of theirs sees.
    """

    def __init__(
        self,
        hub: McpHub,
        *,
        hidden: Callable[[str | None], Collection[str]] | None = None,
        owner: str | None = None,
    ) -> None:
        self.hub = hub
        self.hidden = hidden
        self.owner = owner

    def scoped(self, owner: str | None) -> McpToolBox:
        return McpToolBox(self.hub, hidden=self.hidden, owner=owner)

    def _index(self) -> dict[str, McpTool]:
        # Read at every round, so a server switched off mid-turn stops being offered (and callable) at once.
        off = self.hidden(self.owner) if self.hidden is not None else ()
        return {function_name(t.server, t.name): t for t in self.hub.tools() if t.server not in off}

    def specs(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": fname,
                    "description": t.description[:1024],
                    "parameters": t.input_schema or {"type": "object", "properties": {}},
                },
            }
            for fname, t in self._index().items()
        ]

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        tool = self._index().get(name)
        if tool is None:
            raise LookupError(f"no such tool {name!r}")
        return await self.hub.call(tool.server, tool.name, arguments)
