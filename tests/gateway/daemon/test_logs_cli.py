"""`gateway logs --level` and `--json` through real processes, over log files in both formats the gateway writes."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.logs import JsonFormatter, TextFormatter
from tests.gateway.harness import CLI_TIMEOUT, LineReader, Site, end_process


def _record(level: int, msg: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("the disk is on fire")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("gateway.test", level, __file__, 1, msg, None, exc_info)


RECORDS = [
    (logging.DEBUG, "a debug line", False),
    (logging.INFO, "an info line", False),
    (logging.WARNING, "a warning line", False),
    (logging.ERROR, "an error line", True),
    (logging.INFO, "another info line", False),
    (logging.CRITICAL, "a critical line", False),
]


def _write(site: Site, formatter: logging.Formatter, records: list[tuple[int, str, bool]] = RECORDS) -> None:
    site.paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    with site.paths.log_file.open("a") as fh:
        for level, msg, exc in records:
            fh.write(formatter.format(_record(level, msg, exc=exc)) + "\n")


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_level_keeps_records_at_or_above_it_with_their_traceback(tmp_path: Path, formatter: logging.Formatter) -> None:
    site = Site(tmp_path)
    _write(site, formatter)
    r = site.cli("logs", "--level", "warning")
    assert r.returncode == 0, r.stderr
    assert "a warning line" in r.stdout and "an error line" in r.stdout and "a critical line" in r.stdout
    assert "info line" not in r.stdout and "debug line" not in r.stdout
    assert "RuntimeError: the disk is on fire" in r.stdout  # the traceback goes with its record
    last = site.cli("logs", "--level", "error", "-n", "1")
    assert last.returncode == 0 and "a critical line" in last.stdout and "an error line" not in last.stdout
    everything = site.cli("logs", "--level", "debug")
    assert all(msg in everything.stdout for _, msg, _ in RECORDS)
    assert site.cli("logs", "--level", "loud").returncode == 2


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_json_prints_one_object_per_record(tmp_path: Path, formatter: logging.Formatter) -> None:
    site = Site(tmp_path)
    _write(site, formatter)
    r = site.cli("logs", "--json")
    assert r.returncode == 0, r.stderr
    objects = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["level"], o["msg"], o["logger"]) for o in objects] == [
        (logging.getLevelName(level).lower(), msg, "gateway.test") for level, msg, _ in RECORDS
    ]
    assert all(o["ts"].endswith("Z") for o in objects)
    error = objects[3]
    assert error["exc"].startswith("Traceback") and "RuntimeError: the disk is on fire" in error["exc"]
    filtered = site.cli("logs", "--json", "--level", "error", "-n", "5")
    assert [json.loads(line)["msg"] for line in filtered.stdout.splitlines()] == ["an error line", "a critical line"]


def test_a_line_that_is_no_record_is_kept_without_a_level_filter(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.paths.log_file.parent.mkdir(parents=True)
    site.paths.log_file.write_text("printed by something else\n")
    _write(site, TextFormatter(), [(logging.ERROR, "an error line", False)])
    plain = [json.loads(line) for line in site.cli("logs", "--json").stdout.splitlines()]
    assert plain[0] == {"ts": None, "level": None, "logger": None, "msg": "printed by something else"}
    errors = site.cli("logs", "--json", "--level", "info").stdout.splitlines()
    assert [json.loads(line)["msg"] for line in errors] == ["an error line"]


def test_follow_with_a_level_and_json_prints_only_matching_new_records(tmp_path: Path) -> None:
    site = Site(tmp_path)
    _write(site, TextFormatter(), [(logging.INFO, "an old info line", False), (logging.ERROR, "an old error", False)])
    follower = subprocess.Popen(
        site.argv("logs", "--follow", "--json", "--level", "error"), env=site.env, stdout=subprocess.PIPE
    )
    try:
        assert follower.stdout is not None
        reader = LineReader(follower.stdout)
        reader.wait_line("an old error", timeout=CLI_TIMEOUT)
        _write(site, TextFormatter(), [(logging.INFO, "a new info line", False), (logging.ERROR, "a new error", True)])
        line = reader.wait_line("a new error", timeout=CLI_TIMEOUT)
        assert "RuntimeError" in json.loads(line)["exc"]
    finally:
        code = end_process(follower, signal.SIGINT)
    assert code == 0
    assert not any("info line" in seen for seen in reader.seen)
