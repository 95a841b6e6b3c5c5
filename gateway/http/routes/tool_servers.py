"""MCP and A2A servers over REST: register, list (tools from the live hub), enable, delete; secrets never shown."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway.agent.a2a import fetch_card, reload_agents
from gateway.agent.tool_prefs import prefs_of
from gateway.errors import NotFoundError, UnavailableError, ValidationFailedError
from gateway.http.api import Ctx, Ok, endpoint, validation_error
from gateway.http.principal import require_owner
from gateway.http.routes.app_config import Url
from gateway.logs import redactor
from gateway.outbound import check_settable
from storage import mcp as mcp_db
from storage import skills as a2a_db
from storage import tool_prefs as prefs_db
from storage.clock import now_ms
from storage.mcp import McpServerRow

ServerName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Short = Annotated[str, msgspec.Meta(max_length=1024)]
EnvMap = Annotated[dict[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")], Short],
                   msgspec.Meta(max_length=64)]  # fmt: skip
HeaderMap = Annotated[dict[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{1,128}$")],
                           Annotated[str, msgspec.Meta(max_length=4096, pattern=r"^[\x20-\x7e]*$")]],
                      msgspec.Meta(max_length=64)]  # fmt: skip
A2A_TIMEOUT = 10.0


class McpServerIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    transport: Literal["stdio", "sse", "streamable_http"]
    enabled: bool = True
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    env: EnvMap | UnsetType = UNSET  # absent on an update: keep the stored env (it is never shown to copy back)
    command: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    args: Annotated[list[Short], msgspec.Meta(max_length=100)] = []
    url: Url | Literal[""] = ""
    headers: HeaderMap | UnsetType = UNSET


# Each entry is decoded by the handler, so a 422 can name the server (msgspec's paths leave dict keys out);
# the documented schema is still McpServerIn's.
_SERVER_SCHEMA = msgspec.json.schema(McpServerIn)["$defs"]["McpServerIn"]
RawServer = Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=_SERVER_SCHEMA)]


class McpConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mcpServers: Annotated[dict[ServerName, RawServer], msgspec.Meta(min_length=1, max_length=32)]


class McpServerOut(msgspec.Struct, kw_only=True):
    server_name: str
    enabled: bool
    transport: str
    description: str
    tools: list[str]
    state: str  # disabled | starting | connected | error | failed | stopped
    error: str | None = None


class McpServerList(msgspec.Struct, kw_only=True):
    mcp_servers: list[McpServerOut]


class EnabledRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool


class A2ARegister(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    base_url: Url


class A2AItem(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    base_url: str
    input_modes: list[str]
    output_modes: list[str]
    streaming: bool
    push_notifications: bool
    enabled: bool


class A2AList(msgspec.Struct, kw_only=True):
    a2a_servers: list[A2AItem]


async def apply_mcp(ctx: Ctx) -> None:
    """Make the live connections match the stored configuration (starts, restarts, stops; returns at once)."""
    hub = ctx.runtime.mcp
    if hub is None:
        raise UnavailableError("the MCP hub is not running")
    hub.apply(await ctx.store.call(mcp_db.list_servers))


def mcp_view(ctx: Ctx, row: McpServerRow) -> McpServerOut:
    hub = ctx.runtime.mcp
    st = hub.servers.get(row.name) if hub is not None and row.enabled else None
    error = redactor.redact(st.last_error) if st is not None and st.last_error else None
    return McpServerOut(
        server_name=row.name,
        enabled=row.enabled,
        transport=row.transport,
        description=row.description,
        tools=[t.name for t in st.tools] if st is not None and st.state == "connected" else [],
        state=st.state if st is not None else ("disabled" if not row.enabled else "stopped"),
        error=error,
    )


@endpoint("GET", "/api/app-config/mcp-servers", summary="MCP servers and their live tools", tag="app-config",
          response=McpServerList)  # fmt: skip
async def list_mcp(ctx: Ctx) -> McpServerList:
    rows = await ctx.store.call(mcp_db.list_servers)
    return McpServerList(mcp_servers=[mcp_view(ctx, r) for r in rows])


def _decode(name: str, raw: dict[str, Any]) -> McpServerIn:
    try:
        s = msgspec.convert(raw, McpServerIn)
    except msgspec.ValidationError as exc:
        err = validation_error(exc, "body")
        loc = ["body", "mcpServers", name, *err.details[0]["loc"][1:]]
        raise ValidationFailedError(
            f"invalid MCP server {name!r}: {err.details[0]['message']}",
            details=[{"loc": loc, "message": err.details[0]["message"]}],
        ) from None
    _check(name, s)
    return s


def _check(name: str, s: McpServerIn) -> None:
    problems = []
    if s.transport == "stdio" and not s.command.strip():
        problems.append({"loc": ["body", "mcpServers", name, "command"], "message": "stdio needs a command"})
    if s.transport != "stdio" and not s.url:
        problems.append({"loc": ["body", "mcpServers", name, "url"], "message": f"{s.transport} needs a url"})
    if problems:
        raise ValidationFailedError(f"invalid MCP server {name!r}: {problems[0]['message']}", details=problems)


@endpoint(
    "POST",
    "/api/app-config/mcp-servers",
    summary="Add or replace MCP servers (stdio needs command and the gateway token; sse and streamable_http need url)",
    tag="app-config",
    auth="admin",
    body=McpConfig,
    response=Ok,
    errors=(403, 422),
)
async def post_mcp(ctx: Ctx) -> Ok:
    req: McpConfig = ctx.body
    servers = {name: _decode(name, raw) for name, raw in req.mcpServers.items()}
    for name, s in servers.items():
        if s.transport == "stdio":
            require_owner(ctx.user, f"the stdio MCP server {name!r} runs a command on the host")
    now = now_ms()
    by_owner = ctx.user.is_owner
    before = {r.name: r for r in await ctx.store.call(mcp_db.list_servers)}
    owners = [r.url for r in before.values() if r.url_by_owner]
    for name, s in servers.items():
        if s.url:
            what = f"mcpServers.{name}.url"
            await check_settable(ctx.runtime.outbound, s.url, by_owner=by_owner, what=what, trusted=owners)

    def write(conn: Any) -> None:
        for name, s in servers.items():
            old = mcp_db.get_server(conn, name)
            env = s.env if not isinstance(s.env, UnsetType) else (old.env if old else {})
            headers = s.headers if not isinstance(s.headers, UnsetType) else (old.headers if old else {})
            for secret in [*env.values(), *headers.values()]:
                redactor.add(secret)
            # The owner's URL stays the owner's when re-sent unchanged; any other change is the caller's.
            url_by_owner = by_owner or (old is not None and old.url_by_owner and old.url == s.url)
            row = McpServerRow(
                name=name, transport=s.transport, enabled=s.enabled, description=s.description, command=s.command,
                args=list(s.args), env=dict(env), url=s.url, headers=dict(headers), url_by_owner=url_by_owner,
            )  # fmt: skip
            mcp_db.upsert_server(conn, row, now_ms=now)

    await ctx.store.call(write)
    await apply_mcp(ctx)
    return Ok()


@endpoint(
    "POST",
    "/api/app-config/mcp-servers/{server_name}/delete",
    summary="Delete an MCP server (and every user's preference about it)",
    tag="app-config",
    auth="admin",
    response=Ok,
    errors=(404,),
)
async def delete_mcp(ctx: Ctx) -> Ok:
    name = ctx.path("server_name")

    def delete(conn: Any) -> bool:
        if not mcp_db.delete_server(conn, name):
            return False
        prefs_db.forget_tool(conn, "mcp", name)
        return True

    if not await ctx.store.call(delete):
        raise NotFoundError(f"no MCP server {name!r}", code="MCP_SERVER_NOT_FOUND")
    prefs_of(ctx.runtime).forget_mcp(name)
    await apply_mcp(ctx)
    return Ok()


@endpoint(
    "POST",
    "/api/app-config/mcp-servers/{server_name}/enabled",
    summary="Enable or disable an MCP server (it connects or disconnects at once)",
    tag="app-config",
    auth="admin",
    body=EnabledRequest,
    response=Ok,
    errors=(404, 422),
)
async def enable_mcp(ctx: Ctx) -> Ok:
    req: EnabledRequest = ctx.body
    name = ctx.path("server_name")
    if not await ctx.store.call(mcp_db.set_enabled, name, req.enabled, now_ms=now_ms()):
        raise NotFoundError(f"no MCP server {name!r}", code="MCP_SERVER_NOT_FOUND")
    await apply_mcp(ctx)
    return Ok()


def a2a_item(view: dict[str, Any]) -> A2AItem:
    return msgspec.convert(view, A2AItem)


@endpoint("GET", "/api/app-config/a2a-servers", summary="Registered A2A servers", tag="app-config",
          response=A2AList)  # fmt: skip
async def list_a2a(ctx: Ctx) -> A2AList:
    rows = await ctx.store.call(a2a_db.list_a2a)
    return A2AList(a2a_servers=[a2a_item(r.view()) for r in rows])


@endpoint(
    "POST",
    "/api/app-config/a2a-servers",
    summary="Register an A2A server by base_url: its agent card is fetched and stored",
    tag="app-config",
    auth="admin",
    body=A2ARegister,
    response=A2AItem,
    errors=(403, 422),
)
async def post_a2a(ctx: Ctx) -> A2AItem:
    req: A2ARegister = ctx.body
    # The card is fetched on the caller's behalf: a private address only when the owner (gateway token) asks.
    trusted = [req.base_url] if ctx.user.is_owner else []
    async with ctx.runtime.outbound.client(trusted=trusted, timeout=A2A_TIMEOUT, follow_redirects=False) as client:
        row = await fetch_card(req.base_url, client=client)
    # Remembered for the calls a turn makes: only the owner's agent may sit at a private address.
    row = msgspec.structs.replace(row, url_by_owner=ctx.user.is_owner)
    stored = await ctx.store.call(a2a_db.upsert_a2a, row, now_ms=now_ms())
    await reload_agents(ctx.runtime)
    return a2a_item(stored.view())


@endpoint(
    "POST",
    "/api/app-config/a2a-servers/{a2a_id}/delete",
    summary="Delete an A2A server (and every user's preference about it)",
    tag="app-config",
    auth="admin",
    response=Ok,
    errors=(404,),
)
async def delete_a2a(ctx: Ctx) -> Ok:
    a2a_id = ctx.path("a2a_id")

    def delete(conn: Any) -> bool:
        if not a2a_db.delete_a2a(conn, a2a_id):
            return False
        prefs_db.forget_tool(conn, "a2a", a2a_id)
        return True

    if not await ctx.store.call(delete):
        raise NotFoundError(f"no A2A server {a2a_id!r}", code="A2A_SERVER_NOT_FOUND")
    prefs_of(ctx.runtime).forget_a2a(a2a_id)
    await reload_agents(ctx.runtime)
    return Ok()


@endpoint(
    "POST",
    "/api/app-config/a2a-servers/{a2a_id}/enabled",
    summary="Enable or disable an A2A server",
    tag="app-config",
    auth="admin",
    body=EnabledRequest,
    response=Ok,
    errors=(404, 422),
)
async def enable_a2a(ctx: Ctx) -> Ok:
    req: EnabledRequest = ctx.body
    a2a_id = ctx.path("a2a_id")
    if not await ctx.store.call(a2a_db.set_a2a_enabled, a2a_id, req.enabled):
        raise NotFoundError(f"no A2A server {a2a_id!r}", code="A2A_SERVER_NOT_FOUND")
    await reload_agents(ctx.runtime)
    return Ok()
