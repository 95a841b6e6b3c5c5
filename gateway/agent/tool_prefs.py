"""Users' tool preferences: the MCP servers and A2A agents each one switched off, kept in memory for the providers."""

from __future__ import annotations

from gateway.core import Runtime, started
from storage import tool_prefs as prefs_db

# Preferences of the gateway token, which also apply to sessions no user owns (connectors, /ws with the token).
ADMIN_PREFS = ""


class ToolPrefs:
    """Which MCP servers and A2A agents each user switched off, in memory for the providers (they pick tools
    synchronously, at every round of a turn)."""

    def __init__(self) -> None:
        self._mcp_off: dict[str, set[str]] = {}
        self._a2a_off: dict[str, set[str]] = {}

    def load(self, mcp_off: dict[str, set[str]], a2a_off: dict[str, set[str]] | None = None) -> None:
        self._mcp_off = mcp_off
        self._a2a_off = a2a_off or {}

    @staticmethod
    def _set(table: dict[str, set[str]], user: str, tool: str, enabled: bool) -> None:
        off = table.setdefault(user, set())
        if enabled:
            off.discard(tool)
        else:
            off.add(tool)

    def set_mcp(self, user: str, server: str, enabled: bool) -> None:
        self._set(self._mcp_off, user, server, enabled)

    def forget_mcp(self, server: str) -> None:
        for off in self._mcp_off.values():
            off.discard(server)

    def mcp_hidden(self, owner: str | None) -> frozenset[str]:
        """The MCP servers whose tools a turn of `owner`'s session must not offer."""
        return frozenset(self._mcp_off.get(owner or ADMIN_PREFS, ()))

    def set_a2a(self, user: str, a2a_id: str, enabled: bool) -> None:
        self._set(self._a2a_off, user, a2a_id, enabled)

    def forget_a2a(self, a2a_id: str) -> None:
        for off in self._a2a_off.values():
            off.discard(a2a_id)

    def a2a_hidden(self, owner: str | None) -> frozenset[str]:
        """The A2A agents (by id) a turn of `owner`'s session must not offer."""
        return frozenset(self._a2a_off.get(owner or ADMIN_PREFS, ()))


def prefs_of(runtime: Runtime) -> ToolPrefs:
    return started(runtime.services.tool_prefs, "the tool preferences")


async def load(runtime: Runtime) -> None:
    """Read every user's switch-offs into `runtime.services.tool_prefs` (called once at startup)."""
    runtime.services.tool_prefs = prefs = ToolPrefs()
    prefs.load(
        await runtime.store.call(prefs_db.all_disabled, "mcp"), await runtime.store.call(prefs_db.all_disabled, "a2a")
    )
