"""Structured logging: text or JSON lines to stderr and a rotating file, with every known secret redacted."""

from __future__ import annotations

import logging
import logging.handlers
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


class _Base(logging.Formatter):
    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
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
    def format(self, record: logging.LogRecord) -> str:
        f = self._fields(record)
        rest = " ".join(f"{k}={v}" for k, v in f.items() if k not in ("ts", "level", "logger", "msg", "exc"))
        line = f"{f['ts']} {f['level']:<7} {f['logger']}: {f['msg']}" + (f" {rest}" if rest else "")
        if "exc" in f:
            line += "\n" + f["exc"]
        return redactor.redact(line)


class JsonFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
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
        sh = logging.StreamHandler()
        sh.setFormatter(formatter)
        root.addHandler(sh)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        fh.setFormatter(formatter)
        root.addHandler(fh)
    root.addHandler(memory_handler)
    # Hypercorn's own loggers are routed through ours so its lines are redacted too.
    for name in ("hypercorn.error",):
        lg = logging.getLogger(name)
        lg.handlers = list(root.handlers)
        lg.setLevel("WARNING")
        lg.propagate = False
