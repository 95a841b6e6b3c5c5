"""`gateway logs`: the end of the log file, then (`--follow`) what comes, filtered by level, as text or JSON lines.

The log file holds the records of gateway/logs.py in either format (`log.format`): text (`TS LEVEL LOGGER: MSG`,
an exception's traceback on the lines after it) or one JSON object a line. A record is its first line and the
lines after it that do not start another one, so `--level error` keeps a traceback with its error.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import msgspec

from gateway.config.file import Paths, shorten_token
from gateway.daemon.jsonout import json_line
from gateway.daemon.term import Term

EXIT_OK = 0
EXIT_FAILURE = 1
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_TEXT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) ([a-z]+) +([^:\s]+): ?(.*)$")
_POLL = 0.2  # seconds between two looks at a quiet log file while following
_FIRST_CHUNK = 64 * 1024


class Record(msgspec.Struct):
    """One log record: the lines it was written as, and its fields when its first line is one of ours."""

    lines: list[str]
    fields: dict[str, Any] | None = None
    extra: list[str] = msgspec.field(default_factory=list)  # lines after the first (a traceback)

    @property
    def level(self) -> int | None:
        name = self.fields.get("level") if self.fields else None
        return LEVELS.get(name) if isinstance(name, str) else None

    def as_json(self) -> dict[str, Any]:
        """The record as `--json` prints it: the JSON format's own object; the text format's fields, same names."""
        out: dict[str, Any] = dict(self.fields) if self.fields else {"ts": None, "level": None, "logger": None}
        if self.fields is None:
            out["msg"] = self.lines[0]
        if self.extra:
            exc = "\n".join(self.extra)
            out["exc"] = f"{out['exc']}\n{exc}" if isinstance(out.get("exc"), str) else exc
        return out


def parse_first_line(line: str) -> dict[str, Any] | None:
    """The fields of a line that starts a record (either format), or None for any other line."""
    if line.startswith("{"):
        try:
            value = msgspec.json.decode(line)
        except msgspec.DecodeError:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("level"), str) else None
    m = _TEXT.match(line)
    if m is None or m[2] not in LEVELS:
        return None
    return {"ts": m[1], "level": m[2], "logger": m[3], "msg": m[4]}


class Grouper:
    """Turns lines into records as they come: a record is complete when the next one starts (or on `flush`)."""

    def __init__(self) -> None:
        self.pending: Record | None = None

    def feed(self, line: str) -> list[Record]:
        fields = parse_first_line(line)
        if fields is None and self.pending is not None:
            self.pending.lines.append(line)
            self.pending.extra.append(line)
            return []
        done = self.flush()
        self.pending = Record([line], fields)
        return done

    def flush(self) -> list[Record]:
        done, self.pending = ([self.pending] if self.pending is not None else []), None
        return done


def group(lines: Iterable[str]) -> list[Record]:
    g = Grouper()
    out = [r for line in lines for r in g.feed(line)]
    return out + g.flush()


def level_filter(level: str | None) -> Callable[[Record], bool]:
    """Keep records at `level` or above (a line that is not a record has no level: kept only without a filter)."""
    if level is None:
        return lambda r: True
    floor = LEVELS[level]
    return lambda r: r.level is not None and r.level >= floor


def tail_lines(fh: BinaryIO, lines: int) -> list[str]:
    """The last `lines` lines of `fh`, leaving its position at the end it read up to (where following goes on)."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    if lines <= 0:
        return []
    size = min(end, 8192)
    # Read backwards in growing chunks until enough newlines are seen: logs can be megabytes.
    while True:
        fh.seek(end - size)
        chunk = fh.read(size)
        if chunk.count(b"\n") > lines or size == end:
            break
        size = min(end, size * 4)
    return chunk.decode("utf-8", "replace").splitlines()[-lines:]


def tail_records(fh: BinaryIO, count: int, keep: Callable[[Record], bool]) -> list[Record]:
    """The last `count` records that `keep` accepts, reading backwards in growing chunks; `fh` is left at the end."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    if count <= 0:
        return []
    size = min(end, _FIRST_CHUNK)
    while True:
        fh.seek(end - size)
        lines = fh.read(size).decode("utf-8", "replace").splitlines()
        at_start = size == end
        kept = [r for r in group(lines if at_start else lines[1:]) if keep(r)]  # lines[0] may be cut
        # One more than asked: the first record of a chunk may have lost its first line to the cut.
        if at_start or len(kept) > count:
            return kept[-count:]
        size = min(end, size * 4)


def logs(
    paths: Paths,
    *,
    lines: int,
    follow: bool,
    secret: str | None,
    term: Term,
    level: str | None = None,
    as_json: bool = False,
) -> int:
    """`gateway logs`: the last `lines` lines (records, with `level` or `as_json`), then (`follow`) new ones as they
    come, across rotations."""

    def show(text: str) -> None:
        if secret:
            text = text.replace(secret, shorten_token(secret))  # belt and braces: the logger redacts already
        term.line(text)

    keep = level_filter(level)

    def emit(records: Iterable[Record]) -> None:
        for record in records:
            if not keep(record):
                continue
            if as_json:
                show(json_line(record.as_json()))
            else:
                for line in record.lines:
                    show(line)

    by_record = as_json or level is not None
    path = paths.log_file
    if not path.exists() and not follow:
        term.error(f"no log file yet at {path}; it is written once the gateway has started")
        return EXIT_FAILURE
    fh: BinaryIO | None = None
    ident: tuple[int, int] | None = None
    grouper = Grouper()
    try:
        if path.exists():
            # One handle for the tail and the follow, so no line written in between is lost.
            fh = path.open("rb")
            st = os.fstat(fh.fileno())
            ident = (st.st_dev, st.st_ino)
            if by_record:
                emit(tail_records(fh, lines, keep))
            else:
                for line in tail_lines(fh, lines):
                    show(line)
        if not follow:
            return EXIT_OK
        # Ctrl-C ends the follow even when this process was started with SIGINT ignored (a shell's background
        # job, or a parent that ignores it), as `serve` and `chat` do by catching it themselves.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        pending = b""
        while True:
            if fh is not None:
                data = fh.read()
                if data:
                    pending += data
                    *complete, pending = pending.split(b"\n")
                    for raw in complete:
                        emit(grouper.feed(raw.decode("utf-8", "replace")))
                    continue
            # Quiet for a poll: the record being read is whole (the logger writes a record and its traceback at once).
            emit(grouper.flush())
            time.sleep(_POLL)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            # Rotated (a new inode) or truncated: read the new file from its start.
            if fh is None or (st.st_dev, st.st_ino) != ident or st.st_size < fh.tell():
                if fh is not None:
                    fh.close()
                fh = path.open("rb")
                ident = (st.st_dev, st.st_ino)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if fh is not None:
            fh.close()
