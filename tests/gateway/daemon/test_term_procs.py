"""Terminal styling (colour only on a TTY) and the /proc helpers on this very process."""

from __future__ import annotations

import io
import os
import socket

import pytest

from gateway.daemon.procs import free_port, is_alive, listening_pids, process_start_time, terminate
from gateway.daemon.term import Term, human_duration


def test_no_escape_codes_unless_colour_is_on() -> None:
    plain, coloured = io.StringIO(), io.StringIO()
    Term(plain).ok("running")
    Term(coloured, colour=True).ok("running")
    assert plain.getvalue() == "running\n"
    assert coloured.getvalue().startswith("\x1b[32;1m") and "running" in coloured.getvalue()


def test_no_colour_for_a_pipe_or_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Term(io.StringIO()).colour is False
    monkeypatch.setenv("NO_COLOR", "1")
    read, write = os.openpty()
    try:
        with os.fdopen(write, "w", closefd=False) as tty:
            assert Term(tty).colour is False
    finally:
        os.close(read)
        os.close(write)


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (125, "2m 5s"), (3 * 3600 + 60, "3h 1m"), (90000, "1d 1h")])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_listening_pids_finds_this_process_and_free_port_never_signals_itself() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening_pids(port) == {os.getpid()}
        stopped = free_port(port, grace=0.1)
        assert not stopped.signalled
        assert terminate([os.getpid()], grace=0.1).signalled == frozenset()
    assert listening_pids(port) == set()


def test_process_facts() -> None:
    assert is_alive(os.getpid())
    assert process_start_time(os.getpid()) is not None
    assert not is_alive(0)
