"""`ToolBoxes`: several boxes offered as one, each scoped to the turn's owner, calls routed to the box that offered."""

from __future__ import annotations

from typing import Any

import pytest

from actors.tools import ToolBoxes


class Box:
    """A tool box in the shape the providers take: its names, hidden per owner when `hidden` says so."""

    def __init__(self, label: str, names: list[str], hidden: dict[str, set[str]] | None = None) -> None:
        self.label = label
        self.names = names
        self.hidden = hidden or {}
        self.owner: str | None = None

    def scoped(self, owner: str | None) -> Box:
        box = Box(self.label, self.names, self.hidden)
        box.owner = owner
        return box

    def specs(self) -> list[dict[str, Any]]:
        off = self.hidden.get(self.owner or "", set())
        return [{"type": "function", "function": {"name": n}} for n in self.names if n not in off]

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        return f"{self.label}:{name}:{arguments}"


async def test_boxes_merge_route_and_scope() -> None:
    mcp = Box("mcp", ["calc__add", "a2a__clash"])
    a2a = Box("a2a", ["a2a__clash", "a2a__planner"], hidden={"erin": {"a2a__planner"}})
    both = ToolBoxes([mcp, a2a])
    assert [s["function"]["name"] for s in both.specs()] == ["calc__add", "a2a__clash", "a2a__planner"]
    assert await both.call("a2a__clash", {"x": 1}) == "mcp:a2a__clash:{'x': 1}", "the first box keeps a name"
    assert await both.call("a2a__planner", {}) == "a2a:a2a__planner:{}"
    erins = both.scoped("erin")
    assert [s["function"]["name"] for s in erins.specs()] == ["calc__add", "a2a__clash"]
    with pytest.raises(LookupError):
        await erins.call("a2a__planner", {})
