"""Each user's tool preferences: switch an MCP or A2A server off (or on again) for their own turns."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.agent.tool_prefs import ADMIN_PREFS, prefs_of
from gateway.errors import NotFoundError
from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.routes.tool_servers import EnabledRequest
from storage import mcp as mcp_db
from storage import skills as a2a_db
from storage import tool_prefs as prefs_db
from storage.clock import now_ms


class ToolWithPreference(msgspec.Struct, kw_only=True):
    tool_id: str
    tool_name: str
    description: str
    enabled_global: bool
    enabled_user: bool


class ToolListResponse(msgspec.Struct, kw_only=True):
    tools: list[ToolWithPreference]


def _user_key(ctx: Ctx) -> str:
    # The gateway token has no user id: its choices apply to the sessions no user owns.
    return ctx.user.user_id or ADMIN_PREFS


@endpoint("GET", "/api/user/tools/mcp", summary="MCP servers with your preference", tag="user-tools",
          response=ToolListResponse)  # fmt: skip
async def list_mcp_tools(ctx: Ctx) -> ToolListResponse:
    user = _user_key(ctx)

    def read(conn: Any) -> tuple[list[mcp_db.McpServerRow], dict[str, bool]]:
        return mcp_db.list_servers(conn), prefs_db.prefs_of(conn, user, "mcp")

    rows, prefs = await ctx.store.call(read)
    return ToolListResponse(
        tools=[
            ToolWithPreference(tool_id=r.name, tool_name=r.name, description=r.description, enabled_global=r.enabled,
                               enabled_user=prefs.get(r.name, True))
            for r in rows
        ]
    )  # fmt: skip


@endpoint(
    "POST",
    "/api/user/tools/mcp/{server_name}/enabled",
    summary="Switch an MCP server's tools on or off for your turns",
    tag="user-tools",
    body=EnabledRequest,
    response=Ok,
    errors=(404, 422),
)
async def set_mcp_tool(ctx: Ctx) -> Ok:
    req: EnabledRequest = ctx.body
    name, user = ctx.path("server_name"), _user_key(ctx)

    def write(conn: Any) -> bool:
        if mcp_db.get_server(conn, name) is None:
            return False
        prefs_db.set_pref(conn, user, "mcp", name, req.enabled, now_ms=now_ms())
        return True

    if not await ctx.store.call(write):
        raise NotFoundError(f"no MCP server {name!r}", code="MCP_SERVER_NOT_FOUND")
    # In memory too: the next turn of this user's sessions picks its tools from here.
    prefs_of(ctx.runtime).set_mcp(user, name, req.enabled)
    return Ok()


@endpoint("GET", "/api/user/tools/a2a", summary="A2A servers with your preference", tag="user-tools",
          response=ToolListResponse)  # fmt: skip
async def list_a2a_tools(ctx: Ctx) -> ToolListResponse:
    user = _user_key(ctx)

    def read(conn: Any) -> tuple[list[a2a_db.A2AServerRow], dict[str, bool]]:
        return a2a_db.list_a2a(conn), prefs_db.prefs_of(conn, user, "a2a")

    rows, prefs = await ctx.store.call(read)
    return ToolListResponse(
        tools=[
            ToolWithPreference(tool_id=r.id, tool_name=r.name, description=r.description, enabled_global=r.enabled,
                               enabled_user=prefs.get(r.id, True))
            for r in rows
        ]
    )  # fmt: skip


@endpoint(
    "POST",
    "/api/user/tools/a2a/{a2a_id}/enabled",
    summary="Switch an A2A server on or off for your turns",
    tag="user-tools",
    body=EnabledRequest,
    response=Ok,
    errors=(404, 422),
)
async def set_a2a_tool(ctx: Ctx) -> Ok:
    req: EnabledRequest = ctx.body
    a2a_id, user = ctx.path("a2a_id"), _user_key(ctx)

    def write(conn: Any) -> bool:
        if a2a_db.get_a2a(conn, a2a_id) is None:
            return False
        prefs_db.set_pref(conn, user, "a2a", a2a_id, req.enabled, now_ms=now_ms())
        return True

    if not await ctx.store.call(write):
        raise NotFoundError(f"no A2A server {a2a_id!r}", code="A2A_SERVER_NOT_FOUND")
    # In memory too: the next round of this user's turns is offered the agent, or not.
    prefs_of(ctx.runtime).set_a2a(user, a2a_id, req.enabled)
    return Ok()
