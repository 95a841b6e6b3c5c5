"""Terminal output for the CLI: colour and symbols only on a TTY (and never with NO_COLOR), plain text otherwise."""

from __future__ import annotations

import os
import sys
from typing import TextIO

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def wants_colour(stream: TextIO) -> bool:
    """Colour for a terminal only: not for pipes, files, `NO_COLOR=1` or `TERM=dumb`."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Term:
    """Writes styled lines to one stream; styles vanish when the stream is not a terminal."""

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.colour = wants_colour(self.stream) if colour is None else colour

    def style(self, text: str, *styles: str) -> str:
        if not self.colour or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def ok(self, text: str) -> None:
        self.line(self.style(("✔ " if self.colour else "") + text, "green", "bold"))

    def warn(self, text: str) -> None:
        self.line(self.style(("! " if self.colour else "warning: ") + text, "yellow"))

    def error(self, text: str) -> None:
        self.line(self.style(("✘ " if self.colour else "error: ") + text, "red", "bold"))

    def field(self, name: str, value: object, width: int = 12) -> None:
        self.line(f"  {self.style(f'{name}:'.ljust(width), 'dim')} {value}")

    def hint(self, command: str, what: str) -> None:
        self.line(f"  {self.style(command.ljust(22), 'cyan')} {self.style(what, 'dim')}")


def is_broken_pipe(exc: BaseException) -> bool:
    """True when `exc` is (or a nursery's group holds only) EPIPE: whoever read our output has gone."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_broken_pipe(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def silence_output() -> None:
    """Point stdout and stderr at /dev/null: after EPIPE, Python would complain again when it flushes them at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass


def human_duration(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `4m 10s`, `12s`: the two largest units."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"
