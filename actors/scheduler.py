"""Placeholder."""

from __future__ import annotations

from typing import Any


async def start_scheduler(runtime: Any, nursery: Any) -> None:
    return None
