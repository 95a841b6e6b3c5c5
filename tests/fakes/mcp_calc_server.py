"""A tiny MCP server over stdio, written with the official SDK, for tests: `add`, `echo` and `crash`."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

app = MCPServer("calc")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def echo(text: str) -> str:
    """Return the text."""
    return f"echo: {text} (secret env {'set' if os.environ.get('CALC_SECRET') else 'unset'})"


@app.tool()
def crash() -> str:
    """Kill this server process, to test reconnection."""
    os._exit(3)


if __name__ == "__main__":
    app.run("stdio")
