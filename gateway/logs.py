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


class Redactor:
    """The set of secret values that must never be written; formatters replace them before output."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 6:
            with self._lock:
                self._secrets.add(secret)

    def discard(self, secret: str) -> None:
        with self._lock:
            self._secrets.discard(secret)

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for s in secrets:
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
