"""The web UI: `/` serves the single-page app, `/assets/*` its files, with a strict Content-Security-Policy."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.http.responses import error_response

ROOT = Path(__file__).parents[1] / "static" / "webui"

# Only these suffixes are served; anything else in the folder stays private.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}
# A Host header is echoed into connect-src only when it is a plain host[:port] (no spaces, quotes or semicolons).
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:\d{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?$")
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Asset(msgspec.Struct, frozen=True):
    body: bytes
    media_type: str
    etag: str


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    return Asset(body, MEDIA_TYPES[path.suffix], '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')


def scan(root: Path = ROOT) -> dict[str, Asset]:
    """Every servable file under `root/assets`, by its URL path relative to `/assets/`.

    The table is the allowlist: a request names a key of it or gets a 404, so no path from the URL ever reaches
    the file system (no traversal, no symlink games). The assets are small (about 330 KB), so they stay in memory.
    """
    assets: dict[str, Asset] = {}
    base = root / "assets"
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.suffix in MEDIA_TYPES:
            assets[path.relative_to(base).as_posix()] = _load(path)
    return assets


def content_security_policy(host: str | None) -> str:
    """Only this origin: scripts, styles, images, and fetch/WebSocket to the same host (ws: and wss:)."""
    connect = "'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src {connect}; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


class WebUI:
    """The two routes, over the assets scanned once, on the first request for the web UI (an idle gateway, or
    one only used through its API, keeps the ~330 KB out of memory)."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self._index: Asset | None = None
        self._assets: dict[str, Asset] | None = None

    @property
    def index(self) -> Asset:
        if self._index is None:
            self._index = _load(self.root / "index.html")
        return self._index

    @property
    def assets(self) -> dict[str, Asset]:
        if self._assets is None:
            self._assets = scan(self.root)
        return self._assets

    def _send(self, request: Request, asset: Asset, *, cache: str) -> Response:
        headers = {"ETag": asset.etag, "Cache-Control": cache, **_COMMON_HEADERS}
        if asset.media_type.startswith("text/html"):
            headers["Content-Security-Policy"] = content_security_policy(request.headers.get("host"))
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else asset.body
        response = Response(body, media_type=asset.media_type, headers=headers)
        if request.method == "HEAD":
            response.headers["Content-Length"] = str(len(asset.body))
        return response

    async def page(self, request: Request) -> Response:
        # no-cache = always revalidate (cheap with the ETag): a new gateway version shows at once.
        return self._send(request, self.index, cache="no-cache")

    async def asset(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["path"])
        if found is None:
            return error_response(404, "NOT_FOUND", "no such asset")
        return self._send(request, found, cache="no-cache")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET", "HEAD"]),
            Route("/assets/{path:path}", self.asset, methods=["GET", "HEAD"]),
        ]


def routes() -> list[BaseRoute]:
    return WebUI().routes()
