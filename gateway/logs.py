"""Structured logging: text or JSON lines to stderr and a rotating file, with every known secret redacted."""

from __future__ import annotations

import copy
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

REDACTED = "[REDACTED]"
_REDACTED_BYTES = REDACTED.encode()


class Redactor:
    """The set of secret values that must never leave the process; everything that does passes through here.

    Log formatters, JSON responses, SSE events, `/ws` frames (before encryption), `gateway config` and
    `gateway status` call it, so adding a secret once covers all of them.
    """

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        # Longest first, so a secret containing another is replaced whole; swapped atomically on change.
        self._ordered: tuple[str, ...] = ()
        self._patterns: tuple[bytes, ...] = ()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 6:
            with self._lock:
                if secret not in self._secrets:
                    self._secrets.add(secret)
                    self._reorder()

    def discard(self, secret: str) -> None:
        with self._lock:
            self._secrets.discard(secret)
            self._reorder()

    def _reorder(self) -> None:
        ordered = tuple(sorted(self._secrets, key=len, reverse=True))
        patterns: list[bytes] = []
        for s in ordered:
            raw = s.encode()
            # In JSON a secret holding `"`, `\` or a control character is written escaped: match that form too.
            escaped = msgspec.json.encode(s)[1:-1]
            patterns.extend([raw] if escaped == raw else [raw, escaped])
        self._ordered, self._patterns = ordered, tuple(patterns)

    def redact(self, text: str) -> str:
        for s in self._ordered:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def redact_data(self, value: Any) -> Any:
        """Return `value` (JSON-like: dicts, lists, strings) with every string redacted; other values as they are."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_data(v) for v in value]
        return value

    def redact_bytes(self, data: bytes) -> bytes:
        """Redact encoded text (UTF-8 or JSON): an HTTP body, an SSE event, a `/ws` frame before sealing."""
        for p in self._patterns:
            if p in data:
                data = data.replace(p, _REDACTED_BYTES)
        return data


redactor = Redactor()


_second: tuple[int, str] = (-1, "")  # the last whole second formatted: most lines share it with the one before


def _timestamp(created: float, msecs: float) -> str:
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int(msecs):03d}Z"


class _Base(logging.Formatter):
    """Formats a record once per formatter: the stderr and file handlers share one formatter, so a line (the
    access log's, once per request) is built and redacted once, not once per handler."""

    def format(self, record: logging.LogRecord) -> str:
        cached: tuple[logging.Formatter, str] | None = record.__dict__.get("_gateway_line")
        if cached is not None and cached[0] is self:
            return cached[1]
        line = self._format(record)
        record._gateway_line = (self, line)
        return line

    def _format(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return out


class TextFormatter(_Base):
    def _format(self, record: logging.LogRecord) -> str:
        f = self._fields(record)
        rest = " ".join(f"{k}={v}" for k, v in f.items() if k not in ("ts", "level", "logger", "msg", "exc"))
        line = f"{f['ts']} {f['level']:<7} {f['logger']}: {f['msg']}" + (f" {rest}" if rest else "")
        if "exc" in f:
            line += "\n" + f["exc"]
        return redactor.redact(line)


class JsonFormatter(_Base):
    def _format(self, record: logging.LogRecord) -> str:
        return redactor.redact(msgspec.json.encode(self._fields(record)).decode())


class MemoryHandler(logging.Handler):
    """Keeps the last N records (already redacted) for the log API and the web UI's live viewer."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._fmt = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(msgspec.json.decode(self._fmt.format(record)))
        except Exception:
            self.handleError(record)


memory_handler = MemoryHandler()


class _QuietRotatingFile(logging.handlers.RotatingFileHandler):
    """The log file; when its disk refuses (read-only, full), one line on stderr per outage, not a traceback per
    record, and the file is reopened for the next record; the other handlers (stderr, memory) go on."""

    failing = False
    _ok = True

    def emit(self, record: logging.LogRecord) -> None:
        self._ok = True
        super().emit(record)
        if self._ok:
            self.failing = False

    def handleError(self, record: logging.LogRecord) -> None:
        self._ok = False
        # Reopened by the next record: a disk remounted writable is a new file system under the same path.
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
        if not self.failing:
            self.failing = True
            exc = sys.exc_info()[1]
            try:
                sys.stderr.write(f"gateway: cannot write the log file {self.baseFilename}: {exc}\n")
            except Exception:
                pass


class BackgroundFileHandler(logging.Handler):
    """Formats (and redacts) each record at once, then writes it from a thread of its own: a log line must never
    block the event loop on a frozen, slow or read-only disk (the log file is in the data folder). Lines beyond
    `capacity` waiting for the disk are dropped and counted."""

    def __init__(
        self, target: logging.Handler, *, capacity: int = 10_000, linger: float = 0.02, name: str = "gateway-log-file"
    ) -> None:
        super().__init__()
        self.target = target
        self.linger = linger
        self.dropped = 0
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = copy.copy(record)
            line.msg, line.args = self.format(record), None
            line.exc_info = line.exc_text = line.stack_info = None
        except Exception:
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        record = self._queue.get()
        while record is not None:
            self.target.handle(record)
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                # Lines that come meanwhile are written in one go: under load (an access line per request) this
                # thread wakes, and takes the GIL from the event loop, once per `linger`, not once per line.
                time.sleep(self.linger)
                record = self._queue.get()
        try:
            self.target.close()
        except OSError:
            pass  # a disk gone read-only cannot take the last flush; its outage was reported already

    def close(self) -> None:
        """Write what is queued (waiting at most 2 s for the disk) and stop the thread."""
        try:
            self._queue.put(None, timeout=2)
        except queue.Full:
            pass
        self._thread.join(timeout=2)
        super().close()


def setup_logging(
    *,
    level: str = "info",
    fmt: str = "text",
    file: Path | None = None,
    max_bytes: int = 5 * 1024 * 1024,
    backups: int = 3,
    stderr: bool = True,
) -> None:
    """Configure the `gateway` logger tree once (idempotent: replaces handlers set by an earlier call)."""
    root = logging.getLogger("gateway")
    root.setLevel(level.upper())
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    if stderr:
        # Written from a thread of its own too: a write to a pipe or terminal is a system call per line (the
        # access log writes one per request), which the event loop should not wait for, nor hang on when the
        # reader of the pipe stalls. Lines still come out in order; the thread writes what is queued at exit.
        sh = logging.StreamHandler()
        sh.setFormatter(logging.Formatter("%(message)s"))  # formatted and redacted before it is queued
        bg_err = BackgroundFileHandler(sh, name="gateway-log-stderr")
        bg_err.setFormatter(formatter)
        root.addHandler(bg_err)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fh = _QuietRotatingFile(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(message)s"))  # formatted and redacted before it is queued
        bg = BackgroundFileHandler(fh)
        bg.setFormatter(formatter)
        root.addHandler(bg)
    root.addHandler(memory_handler)
    # Hypercorn's own loggers are routed through ours so its lines are redacted too.
    for name in ("hypercorn.error",):
        lg = logging.getLogger(name)
        lg.handlers = list(root.handlers)
        lg.setLevel("WARNING")
        lg.propagate = False
