"""Helpers for the agent-config tests: point the `openai` provider at a fake, run a turn over SSE, capture logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from gateway.logs import memory_handler, setup_logging
from tests.gateway.rest import sse_events


async def use_fake_openai(admin: httpx.AsyncClient, base_url: str, **extra: Any) -> dict[str, Any]:
    """Make `openai` the default provider, talking to the fake at `base_url`; return the LLM view."""
    body = {"provider": "openai", "base_url": base_url, "model_name": "fake-gpt", **extra}
    r = await admin.post("/api/app-config/llm", json=body)
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def sse_turn(client: httpx.AsyncClient, session_id: str, message: str) -> list[dict[str, Any]]:
    """Run one turn through `POST /api/sessions/{id}/chat` and return its SSE events."""
    async with client.stream("POST", f"/api/sessions/{session_id}/chat", json={"message": message}) as r:
        assert r.status_code == 200, await r.aread()
        return await sse_events(r)


def of_type(events: list[dict[str, Any]], kind: str) -> list[Any]:
    return [e["data"] for e in events if e.get("event") == kind]


@contextmanager
def logging_to(file: Path, min_level: str = "debug") -> Iterator[Path]:
    """Send the `gateway` logs (`min_level` and up) to `file` while the block runs, then put the old setup back."""
    names = ("gateway", "hypercorn.error")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}  # fmt: skip
    setup_logging(level=min_level, file=file, stderr=False)
    try:
        yield file
    finally:
        for n, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(n)
            for h in lg.handlers:
                if h not in handlers and h is not memory_handler:
                    h.close()  # the file's writer thread: writes what it queued, then stops
            lg.handlers, lg.level, lg.propagate = handlers, level, propagate
