"""Files: multipart upload to the data folder, metadata, streamed download, delete; users see only their own."""

from __future__ import annotations

import mimetypes
import os
import re
import time
import unicodedata
from functools import partial
from pathlib import Path
from urllib.parse import quote

import trio
from starlette.datastructures import UploadFile
from starlette.responses import StreamingResponse

from gateway import fileio
from gateway.errors import ForbiddenError, NotFoundError, NotRegularFileError, PayloadTooLargeError
from gateway.http.api import Ctx, Ok, endpoint, uploaded_file
from gateway.http.routes.sessions import FileInfo, file_info
from storage import files as files_db
from storage.clock import now_ms
from storage.files import FileRow
from storage.ids import new_id

CHUNK = 64 * 1024


def clean_filename(name: str) -> str:
    """Keep a display name only: no directories, control characters or quotes; never used as a path."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in '"')
    return name.strip().lstrip(".")[:200] or "file"


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback first, then the exact name as RFC 5987 `filename*`."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _path_of(files_dir: Path, row: FileRow) -> Path:
    root = os.path.realpath(files_dir)
    path = os.path.realpath(os.path.join(root, row.key))
    # commonpath, not commonprefix: `/files/../files2` must not pass (Starlette CVE-2023-29159).
    if os.path.commonpath([root, path]) != root:
        raise NotFoundError("the file's content is missing", code="FILE_NOT_FOUND")
    return Path(path)


async def owned_file(ctx: Ctx, file_id: str) -> FileRow:
    row = await ctx.store.call(files_db.get_file, file_id)
    if row is None:
        raise NotFoundError(f"no file {file_id!r}", code="FILE_NOT_FOUND")
    if not ctx.user.may_access(row.owner):
        raise ForbiddenError("this file belongs to another user", code="FILE_FORBIDDEN")
    return row


@endpoint(
    "POST",
    "/api/files",
    summary="Upload a file (multipart/form-data, field `file`)",
    tag="files",
    group="upload",
    response=FileInfo,
    status=201,
    multipart=True,
    errors=(413, 415, 422),
)
async def upload(ctx: Ctx) -> FileInfo:
    limit = ctx.runtime.config.limits.max_upload_bytes
    async with uploaded_file(ctx) as upload:
        filename = clean_filename(upload.filename or "file")
        file_id = new_id()
        key = time.strftime("%Y/%m/", time.gmtime()) + file_id
        dest = ctx.runtime.paths.files_dir / key
        size = await fileio.run_sync(_save, upload, dest, limit, what="upload")
    extension = Path(filename).suffix.lower().lstrip(".")[:16]
    # The client's Content-Type is not trusted: the type comes from the extension.
    mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    row = FileRow(file_id, ctx.user.owner, None, filename, extension, mime, size, key, now_ms())
    try:
        await ctx.store.call(files_db.add_file, row)
    except BaseException:
        # Not recorded (storage refused, or the request ended): the content must not stay behind unlisted.
        with trio.CancelScope(shield=True):
            await fileio.run_sync(partial(dest.unlink, missing_ok=True), what="unlink")
        raise
    return file_info(row)


def _save(upload: UploadFile, dest: Path, limit: int) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError.over(limit, "limits.max_upload_bytes", what="the file")
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)  # too large, or the disk refused (full): never a partial file left behind
        raise
    return size


@endpoint("GET", "/api/files/{id}", summary="A file's metadata", tag="files", response=FileInfo, errors=(403, 404))
async def get_file(ctx: Ctx) -> FileInfo:
    return file_info(await owned_file(ctx, ctx.path("id")))


@endpoint(
    "GET",
    "/api/files/{id}/download",
    summary="A file's content, streamed",
    tag="files",
    media="application/octet-stream",
    errors=(403, 404),
)
async def download(ctx: Ctx) -> StreamingResponse:
    row = await owned_file(ctx, ctx.path("id"))
    path = _path_of(ctx.runtime.paths.files_dir, row)
    try:
        fd, size = await fileio.open_regular(path)
    except (NotFoundError, NotRegularFileError):
        raise NotFoundError("the file's content is missing", code="FILE_NOT_FOUND") from None
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": content_disposition(row.filename),
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(fileio.read_chunks(fd), media_type=row.mime_type, headers=headers)


@endpoint("DELETE", "/api/files/{id}", summary="Delete a file", tag="files", response=Ok, errors=(403, 404))
async def delete_file(ctx: Ctx) -> Ok:
    row = await owned_file(ctx, ctx.path("id"))
    path = _path_of(ctx.runtime.paths.files_dir, row)
    await ctx.store.call(files_db.delete_file, row.id)
    await fileio.run_sync(lambda: path.unlink(missing_ok=True), what="delete")
    return Ok()
