"""`/ws` behind a trusted proxy: served ahead of the middleware, it still takes the client from X-Forwarded-For."""

from __future__ import annotations

from pathlib import Path

import msgspec
import trio
from trio_websocket import open_websocket_url

from tests.conftest import make_config, start_gateway
from tests.gateway.http.test_auth_throttle import FREE

BAD_AUTH = '{"type":"auth","token":"wrong-token-0123456789","e2e_pk":"' + "A" * 43 + '="}'


async def _refusal(url: str, forwarded_for: str) -> str:
    """The code of the error a wrong token gets on `/ws` from the client the proxy names."""
    async with open_websocket_url(url, extra_headers=[(b"x-forwarded-for", forwarded_for.encode())]) as ws:
        await ws.send_message(BAD_AUTH)
        code: str = msgspec.json.decode(await ws.get_message())["code"]
        return code


async def test_ws_throttles_the_client_a_trusted_proxy_names(nursery: trio.Nursery, tmp_path: Path) -> None:
    limits = {"failed_auth_free": FREE, "auth_burst": 1000, "auth_per_minute": 60000}
    config, paths = make_config(tmp_path, limits=limits, server={"trusted_proxies": ["127.0.0.1"]})
    gw = await start_gateway(nursery, config, paths)
    url = gw.ws_url + "/ws"
    with trio.fail_after(60):
        codes = [await _refusal(url, "198.51.100.1") for _ in range(FREE + 3)]
        assert codes[0] == "auth_failed" and "rate_limited" in codes, codes
        # Another client behind the same proxy is not throttled: the key is the address the proxy names.
        assert await _refusal(url, "198.51.100.2") == "auth_failed"
