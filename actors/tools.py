"""Several tool boxes offered to a provider as one (MCP servers' tools, A2A agents), each scoped to the turn's owner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.providers.openai import ScopedToolBox, ToolBox


class ToolBoxes:
    """The tools of every box, under the names each box gives them; the first box to offer a name keeps it."""

    def __init__(self, boxes: Sequence[ToolBox], *, owner: str | None = None) -> None:
        self.boxes = list(boxes)
        self.owner = owner

    def scoped(self, owner: str | None) -> ToolBoxes:
        return ToolBoxes(
            [b.scoped(owner) if isinstance(b, ScopedToolBox) else b for b in self.boxes],
            owner=owner,
        )

    def _offered(self) -> tuple[list[dict[str, Any]], dict[str, ToolBox]]:
        specs: list[dict[str, Any]] = []
        owners: dict[str, ToolBox] = {}
        for box in self.boxes:
            for spec in box.specs():
                name = str(spec.get("function", {}).get("name", ""))
                if name and name not in owners:
                    owners[name] = box
                    specs.append(spec)
        return specs, owners

    def specs(self) -> list[dict[str, Any]]:
        return self._offered()[0]

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        # Looked up again at the call: a box whose offer changed since the model saw it (an agent switched off
        # mid-turn) no longer answers for that name.
        box = self._offered()[1].get(name)
        if box is None:
            raise LookupError(f"no such tool {name!r}")
        return await box.call(name, arguments)
