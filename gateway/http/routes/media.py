"""Speech to text (`POST /api/transcribe`) and the agents' avatars (read by anyone signed in, set by an admin)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import msgspec
import trio
from starlette.datastructures import UploadFile
from starlette.responses import Response

from gateway import fileio
from gateway.agent.transcribe import TranscribeSettings, transcribe
from gateway.errors import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    NotRegularFileError,
    OwnerOnlyError,
    PayloadTooLargeError,
    UnsupportedMediaError,
    ValidationFailedError,
)
from gateway.http.api import Ctx, endpoint, uploaded_file
from gateway.http.routes.files import allowed_root, resolve_inside, sniff_mime, workspace_root

MAX_AVATAR_BYTES = 1024 * 1024
AVATAR_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")  # never SVG: it can carry scripts
# One path component of letters, digits, '_', '-' and inner dots: no '/', no '..', nothing hidden.
_AGENT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,63}$")


class TranscribeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    file_path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class TranscribeResponse(msgspec.Struct, kw_only=True):
    text: str
    backend: str


class AvatarInfo(msgspec.Struct, kw_only=True):
    name: str
    mime: str
    size: int


@endpoint(
    "POST",
    "/api/transcribe",
    summary="Transcribe an audio file with the configured backends (an account names files in the workspace; "
    "the gateway token anything in server.file_access)",
    tag="media",
    group="upload",
    body=TranscribeRequest,
    response=TranscribeResponse,
    errors=(403, 404, 422, 501, 502),
)
async def transcribe_file(ctx: Ctx) -> TranscribeResponse:
    req: TranscribeRequest = ctx.body
    root = allowed_root(ctx.runtime)
    if ctx.user.is_owner:
        path = resolve_inside(req.file_path, root)
    else:
        # Reading the host's paths is the owner's: an account names files in the workspace only.
        try:
            path = resolve_inside(req.file_path, workspace_root(ctx.runtime))
        except ForbiddenError:
            resolve_inside(req.file_path, root)  # outside what even the owner may read: that 403 says so
            raise OwnerOnlyError("transcribing a file outside the workspace reads a path of the host") from None
    try:
        found = await trio.Path(path).is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise InvalidRequestError(f"cannot use that path: {exc.strerror}") from None
    if not found:
        raise NotFoundError(f"no file {req.file_path!r}", code="FILE_NOT_FOUND")
    t = ctx.runtime.config.transcribe
    settings = TranscribeSettings(
        http_url=t.http_url, http_api_key=t.http_api_key, http_model=t.http_model,
        whisper_command=t.whisper_command, whisper_model=t.whisper_model,
        whisper_cpp_command=t.whisper_cpp_command, whisper_cpp_model=t.whisper_cpp_model, timeout=t.timeout,
    )  # fmt: skip
    text, backend = await transcribe(settings, path)
    return TranscribeResponse(text=text, backend=backend)


def _avatar_path(ctx: Ctx) -> tuple[str, Path]:
    name = ctx.path("name")
    if not _AGENT_NAME.match(name):
        raise ValidationFailedError(
            "an agent name is 1 to 64 letters, digits, '_', '-' or single inner dots",
            details=[{"loc": ["path", "name"], "message": "invalid agent name"}],
        )
    return name, ctx.runtime.paths.data_dir / "avatars" / name


@endpoint(
    "GET",
    "/api/agents/{name}/avatar",
    summary="An agent's avatar image",
    tag="media",
    media="image/*",
    errors=(404, 422),
)
async def get_avatar(ctx: Ctx) -> Response:
    name, path = _avatar_path(ctx)
    try:
        fd, _size = await fileio.open_regular(path)
    except (NotFoundError, NotRegularFileError):
        raise NotFoundError(f"agent {name!r} has no avatar", code="AVATAR_NOT_FOUND") from None
    data = b"".join([chunk async for chunk in fileio.read_chunks(fd)])
    mime = sniff_mime(data[:16], "")
    return Response(data, media_type=mime, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def _store_avatar(upload: UploadFile, path: Path) -> tuple[str, int]:
    upload.file.seek(0)
    data = upload.file.read(MAX_AVATAR_BYTES + 1)
    if len(data) > MAX_AVATAR_BYTES:
        raise PayloadTooLargeError.over(MAX_AVATAR_BYTES, what="the avatar")
    mime = sniff_mime(data[:16], "")  # the content decides, never the client's Content-Type or file name
    if mime not in AVATAR_TYPES:
        raise UnsupportedMediaError("an avatar must be a PNG, JPEG, GIF or WebP image")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)  # readers see the old image or the new one, never half of one
    return mime, len(data)


async def _upload(ctx: Ctx) -> AvatarInfo:
    name, path = _avatar_path(ctx)
    async with uploaded_file(ctx, what="image", max_fields=5) as upload:
        mime, size = await fileio.run_sync(_store_avatar, upload, path, what="avatar")
    return AvatarInfo(name=name, mime=mime, size=size)


_UPLOAD = {
    "summary": "Set an agent's avatar (multipart field `file`: PNG, JPEG, GIF or WebP, at most 1 MiB)",
    "tag": "media",
    "auth": "admin",
    "group": "upload",
    "response": AvatarInfo,
    "multipart": True,
    "errors": (400, 413, 415, 422),
}


@endpoint("PUT", "/api/agents/{name}/avatar", **_UPLOAD)  # type: ignore[arg-type]
async def put_avatar(ctx: Ctx) -> AvatarInfo:
    return await _upload(ctx)


@endpoint("POST", "/api/agents/{name}/avatar", **_UPLOAD)  # type: ignore[arg-type]
async def post_avatar(ctx: Ctx) -> AvatarInfo:
    return await _upload(ctx)
