"""File I/O that never blocks the event loop: worker threads with a timeout, and only regular files opened to read.

A FIFO opened for reading blocks until a writer comes, a device may never answer, and a stalled disk can hold a
read for minutes: each of those in the event loop would freeze every connection (issue 13). So every file
operation of the HTTP routes runs through `run_sync` in a thread of its own limiter (a stuck thread keeps its
token until it returns, so stuck ones never starve the store or Starlette's threads), and a file is opened with
O_NONBLOCK and checked to be regular before anything reads it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Callable
from typing import TypeVar, TypeVarTuple

import trio
import trio.lowlevel

from gateway.errors import FileTimeoutError, InvalidRequestError, NotFoundError, NotRegularFileError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
IO_TIMEOUT = 30.0  # seconds one file operation (an open, a chunk) may take before the request gives up
CHUNK = 256 * 1024
_THREADS = 8
_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("file_io_limiter")


def _threads() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_sync(fn: Callable[[*Ts], T], *args: *Ts, timeout: float = IO_TIMEOUT, what: str = "file") -> T:
    """Run `fn(*args)` in a file-I/O worker thread and return its result.

    Raises FileTimeoutError (503) when it takes over `timeout` seconds (the thread is abandoned, and finishes or
    not on its own), and whatever `fn` raised. Cancellation abandons the thread the same way.
    """
    with trio.move_on_after(timeout):
        return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=_threads())
    raise FileTimeoutError(f"the file system did not answer within {timeout:g} s ({what}); try again later")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def _open_regular(path: str, shown: str) -> tuple[int, int]:
    """Open `path` to read without following a final symlink or waiting on a FIFO; return (fd, size)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {shown}") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidRequestError("the path is too long") from None
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO's writer side, never asked for here)
            raise NotRegularFileError(f"{shown} is not a regular file; only regular files are served") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(f"{shown} is {_kind(info.st_mode)}; only regular files are served")
        os.set_blocking(fd, True)  # a regular file: reads then wait for the disk as usual
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


async def open_regular(path: str | os.PathLike[str], *, shown: str | None = None) -> tuple[int, int]:
    """Open a regular file to read, in a worker thread; return (fd, size). The caller closes the fd.

    Raises NotFoundError (404) when it is missing, NotRegularFileError (404) for a folder, FIFO, socket or device,
    FileTimeoutError (503), and OSError for anything else (e.g. permission denied).
    """
    return await run_sync(_open_regular, os.fspath(path), shown or os.fspath(path), what="open")


async def read_chunks(fd: int, *, timeout: float = IO_TIMEOUT) -> AsyncIterator[bytes]:
    """Yield the file's content chunk by chunk, each read in a worker thread; closes `fd` however it ends.

    A read that takes over `timeout` ends the iteration with FileTimeoutError (the response is then cut short).
    """
    try:
        while chunk := await run_sync(os.read, fd, CHUNK, timeout=timeout, what="read"):
            yield chunk
    finally:
        os.close(fd)
