"""`GET /files` and `POST /upload`: token-protected file access confined to the `file_access` root."""

from __future__ import annotations

import datetime as dt
import mimetypes
import os
import urllib.parse
from functools import partial
from pathlib import Path

import msgspec
import trio
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from gateway import fileio
from gateway.core import Runtime
from gateway.errors import ForbiddenError, InvalidRequestError, PayloadTooLargeError
from gateway.http.api import Ctx, endpoint

_CHUNK = 256 * 1024
_BAD_NAME_CHARS = '/\\<>:"|?*\x00'
MAX_NAME = 120


def allowed_root(runtime: Runtime) -> Path:
    """The folder `file_access` allows: `/`, the home folder, or the workspace (resolved)."""
    mode = runtime.config.server.file_access
    if mode == "all":
        return Path("/")
    if mode == "home":
        return Path(os.path.realpath(Path.home()))
    return workspace_root(runtime)


def workspace_root(runtime: Runtime) -> Path:
    """The workspace folder (created if missing, resolved): all that an account, not the owner, may name."""
    runtime.paths.workspace.mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(runtime.paths.workspace))


def resolve_inside(raw: str, root: Path) -> Path:
    """Resolve `raw` (symlinks included) and return it if it lies inside `root`, comparing whole components.

    Raises InvalidRequestError for NUL/control characters and ForbiddenError outside the root.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise InvalidRequestError("the path contains control characters")
    try:
        candidate = Path(raw).expanduser()
    except RuntimeError:  # "~nosuchuser/...": pathlib cannot find that home folder
        raise InvalidRequestError("the path names the home folder of an unknown user") from None
    if not candidate.is_absolute():
        candidate = root / candidate
    real = Path(os.path.realpath(candidate))
    # commonpath, not commonprefix: "/ws2/x" must not count as inside "/ws" (Starlette CVE-2023-29159).
    if os.path.commonpath([str(root), str(real)]) != str(root):
        raise ForbiddenError("the path is outside the folders this gateway may read (server.file_access)")
    return real


def content_disposition(name: str, kind: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback `filename` and, for anything else, a UTF-8 `filename*`."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\/;' else "_" for c in name) or "file"
    value = f'{kind}; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
    return value


class FileQuery(msgspec.Struct):
    path: str  # absolute, `~/...`, or relative to the workspace; it must lie inside `server.file_access`


@endpoint("GET", "/files", summary="Stream a file inside `server.file_access` (type guessed from its name)",
          tag="files", auth="token", group=None, query=FileQuery, validate=False, media="*/*",
          errors=(403, 404, 503))  # fmt: skip
async def stream_file(ctx: Ctx) -> Response:
    # Read by hand, not by the registry: a missing `path` has always been a 400 naming the usage.
    raw = ctx.request.query_params.get("path")
    if not raw:
        raise InvalidRequestError("missing `path`: GET /files?path=/absolute/path")
    real = resolve_inside(raw, allowed_root(ctx.runtime))
    try:
        # O_NOFOLLOW: if the final component became a symlink after the check, refuse instead of following. Only a
        # regular file is read: a FIFO, socket or device answers 404 at once instead of blocking (issue 13).
        fd, size = await fileio.open_regular(real, shown=raw)
    except OSError:
        raise ForbiddenError("the file cannot be read") from None
    mime = mimetypes.guess_type(real.name)[0] or "application/octet-stream"
    headers = {"Content-Length": str(size), "Content-Disposition": content_disposition(real.name)}
    return StreamingResponse(fileio.read_chunks(fd), media_type=mime, headers=headers)


def clean_name(name: str) -> str:
    """A safe file name: separators, reserved characters and NUL become `_`, at most 120 characters."""
    cleaned = "".join("_" if c in _BAD_NAME_CHARS or ord(c) < 32 else c for c in name).strip(" .")
    if not cleaned:
        cleaned = "file"
    if len(cleaned) > MAX_NAME:
        stem, ext = os.path.splitext(cleaned)
        ext = ext[:20]
        cleaned = stem[: MAX_NAME - len(ext)] + ext
    return cleaned


_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\x1f\x8b", "application/gzip"),
]


def sniff_mime(head: bytes, name: str) -> str:
    """The type from the content's magic bytes (never the client's Content-Type), else from the extension."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _unique(folder: Path, name: str) -> tuple[Path, int]:
    """Create `name` exclusively in `folder` (`name_1.ext`, `name_2.ext` … on a clash); return path and fd."""
    stem, ext = os.path.splitext(name)
    n = 0
    while True:
        candidate = folder / (name if n == 0 else f"{stem}_{n}{ext}")
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            n += 1


class Uploaded(msgspec.Struct):
    path: str
    name: str
    mime: str  # from the content's magic bytes, else the name
    size: int
    prompt: str  # a line to hand the agent: `[The user sent a file: <file:PATH> (MIME, SIZE bytes)]` + caption


@endpoint("POST", "/upload", summary="Upload a file into `<workspace>/api_files/YYYY-MM-DD/` (multipart field `file`)",
          tag="files", auth="token", group=None, multipart=True, form_fields=("caption",), response=Uploaded,
          errors=(413,))  # fmt: skip
async def upload_to_workspace(ctx: Ctx) -> Uploaded:
    request, runtime = ctx.request, ctx.runtime
    # The body is within `files.max_upload_bytes` and the multipart framing (asgi.BodyLimit, as it streams); the
    # file itself is checked as it is written.
    limit = runtime.config.files.max_upload_bytes
    async with request.form(max_files=1, max_fields=8) as form:
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile):
            raise InvalidRequestError("send the file as the multipart field `file`")
        caption = form.get("caption")
        caption = caption.strip() if isinstance(caption, str) else ""
        folder = runtime.paths.workspace / "api_files" / dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        # In worker threads with a timeout, like every file operation of the routes (gateway/fileio.py).
        await fileio.run_sync(partial(folder.mkdir, parents=True, exist_ok=True), what="mkdir")
        target, fd = await fileio.run_sync(_unique, folder, clean_name(upload_file.filename or "file"), what="create")
        size, head = 0, b""
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := await upload_file.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLargeError.over(limit, "files.max_upload_bytes", what="the file")
                    if len(head) < 64:
                        head += chunk[: 64 - len(head)]
                    await fileio.run_sync(out.write, chunk, what="write")
                await fileio.run_sync(out.close, what="close")
        except BaseException:
            with trio.CancelScope(shield=True):  # never leave a partial file behind (bounded by the I/O timeout)
                try:
                    await fileio.run_sync(partial(target.unlink, missing_ok=True), what="unlink")
                except Exception:
                    pass  # the error that brought us here is the one to report
            raise
    mime = sniff_mime(head, target.name)
    prompt = f"[The user sent a file: <file:{target}> ({mime}, {size} bytes)]"
    if caption:
        prompt += f"\n{caption}"
    return Uploaded(str(target), target.name, mime, size, prompt)
