"""The log handlers: stderr and the file written from threads of their own, in order, nothing lost at close."""

from __future__ import annotations

import io
import logging
import os
import threading

from gateway.logs import BackgroundFileHandler, TextFormatter, memory_handler, setup_logging


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    lg = logging.getLogger(name)
    lg.handlers, lg.propagate = [handler], False
    lg.setLevel(logging.INFO)
    return lg


def test_a_stalled_stderr_pipe_never_blocks_the_caller_and_every_line_comes_out_in_order() -> None:
    read_fd, write_fd = os.pipe()
    stream = io.TextIOWrapper(os.fdopen(write_fd, "wb"), encoding="utf-8", line_buffering=False)
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("%(message)s"))
    handler = BackgroundFileHandler(target, name="test-log-stderr")
    handler.setFormatter(TextFormatter())
    lg = _logger(handler, "gateway.test_logs.stalled")
    lines = 2_000  # ~200 KB: far more than a pipe holds while nobody reads it
    try:
        for i in range(lines):
            lg.info("line %05d %s", i, "x" * 60)  # returns at once: the writer thread waits for the pipe, not us
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.extend(os.fdopen(read_fd, encoding="utf-8").read().splitlines()))
        reader.start()
    finally:
        handler.close()  # writes what is queued, then stops its thread
        stream.close()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert len(got) == lines
    assert [int(line.split("line ")[1][:5]) for line in got] == list(range(lines))
    assert all(" info    gateway.test_logs.stalled: line " in line for line in got)


def test_a_line_is_formatted_once_for_handlers_sharing_a_formatter() -> None:
    formatter = TextFormatter()
    calls: list[str] = []

    class Counting(TextFormatter):
        def _format(self, record: logging.LogRecord) -> str:
            calls.append(record.getMessage())
            return super()._format(record)

    counting = Counting()
    out_a, out_b = io.StringIO(), io.StringIO()
    a, b = logging.StreamHandler(out_a), logging.StreamHandler(out_b)
    a.setFormatter(counting)
    b.setFormatter(counting)
    c = logging.StreamHandler(io.StringIO())
    c.setFormatter(formatter)  # another formatter formats for itself
    lg = logging.getLogger("gateway.test_logs.once")
    lg.handlers, lg.propagate = [a, b, c], False
    lg.setLevel(logging.INFO)
    lg.info("hello %s", "world")
    assert calls == ["hello world"]
    assert out_a.getvalue() == out_b.getvalue()
    assert out_a.getvalue().endswith("gateway.test_logs.once: hello world\n")


def test_setup_logging_writes_stderr_from_a_thread_of_its_own() -> None:
    names = ("gateway", "hypercorn.error")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}  # fmt: skip
    try:
        setup_logging(level="info", stderr=True)
        root = logging.getLogger("gateway")
        threaded = [h for h in root.handlers if isinstance(h, BackgroundFileHandler)]
        assert [type(h.target) for h in threaded] == [logging.StreamHandler]
        assert not [h for h in root.handlers if type(h) is logging.StreamHandler]
    finally:
        for n, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(n)
            for h in lg.handlers:
                if h not in handlers and h is not memory_handler:
                    h.close()
            lg.handlers, lg.level, lg.propagate = handlers, level, propagate
