"""`--json` for the commands a script reads: one flag, one encoder (msgspec), secrets redacted on the way out."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import msgspec

from gateway.logs import redactor

JSON_HELP = "print JSON for scripts instead of text"


def add_json_flag(parser: argparse.ArgumentParser, help_: str = JSON_HELP) -> None:
    """The `--json` option, worded and stored (`args.json`) alike on every command that has one."""
    parser.add_argument("--json", action="store_true", help=help_)


def encode(value: Any, *, redact: bool = True) -> str:
    """`value` (dicts, lists, Structs) as indented JSON; every known secret redacted unless the value is one."""
    text = msgspec.json.format(msgspec.json.encode(value)).decode()
    return redactor.redact(text) if redact else text


def print_json(value: Any, *, stream: TextIO | None = None, redact: bool = True) -> None:
    """One JSON document on stdout: what `--json` prints for a command's whole answer."""
    print(encode(value, redact=redact), file=sys.stdout if stream is None else stream, flush=True)


def json_line(value: Any) -> str:
    """`value` as one line of compact JSON (redacted): for streams such as `gateway logs --json`, one per record."""
    return redactor.redact(msgspec.json.encode(value).decode())
