"""Serve a small Starlette app on 127.0.0.1:0 with hypercorn, for fakes of third-party HTTP APIs."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette


async def serve_app(nursery: trio.Nursery, app: Starlette) -> str:
    """Start `app` in `nursery`; return its base URL (http://127.0.0.1:PORT)."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = await nursery.start(partial(serve, cast(Any, app), config))
    return binds[0]
