"""gateway/fileio.py: only regular files are opened (a FIFO, socket, device or folder is refused before any read),
and a file operation that does not return gives up at its timeout instead of holding the request (issue 13 item 5).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
import trio

from gateway import fileio
from gateway.errors import FileTimeoutError, NotFoundError, NotRegularFileError


async def test_only_a_regular_file_is_opened(tmp_path: Path) -> None:
    regular = tmp_path / "a.txt"
    regular.write_bytes(b"hello")
    fd, size = await fileio.open_regular(regular)
    assert size == 5
    assert b"".join([chunk async for chunk in fileio.read_chunks(fd)]) == b"hello"

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "sock"))
    try:
        for path, kind in ((tmp_path / "pipe", "FIFO"), (tmp_path / "folder", "folder"), ("/dev/null", "device")):
            with trio.fail_after(5):  # a FIFO opened to read without O_NONBLOCK would wait for a writer
                with pytest.raises(NotRegularFileError, match=kind):
                    await fileio.open_regular(path)
        with pytest.raises(NotRegularFileError):
            await fileio.open_regular(tmp_path / "sock")
    finally:
        listener.close()
    with pytest.raises(NotFoundError):
        await fileio.open_regular(tmp_path / "missing")


async def test_an_operation_that_does_not_return_gives_up_at_its_timeout() -> None:
    release = threading.Event()
    timer = threading.Timer(3, release.set)  # a thread that cannot be abandoned returns after 3 s: no hang
    timer.start()
    try:
        start = trio.current_time()
        with pytest.raises(FileTimeoutError, match=r"did not answer within 0\.2 s"):
            await fileio.run_sync(release.wait, timeout=0.2, what="read")
        assert trio.current_time() - start < 5  # the stuck thread is abandoned, not waited for
    finally:
        release.set()
        timer.cancel()
