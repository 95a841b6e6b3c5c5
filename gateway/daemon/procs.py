"""Processes seen through /proc: who listens on a port, when a pid started, and stopping one (TERM, wait, KILL)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

PROC = Path("/proc")
_TCP_LISTEN = "0A"  # the `st` column of /proc/net/tcp for a socket in LISTEN state
_POLL = 0.02


def process_start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or None if unknown.

    Together with the pid it names one process for the whole uptime, even after the pid is reused.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_environ(pid: int) -> dict[str, str] | None:
    """The environment `pid` was started with (/proc/<pid>/environ), or None when it cannot be read.

    Only the process's own user (or root) may read it, as only they may signal it.
    """
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


def _state(pid: int) -> str | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[0] if fields else None


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a dead child its parent has not reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return _state(pid) not in ("Z", "X")


def _listen_inodes(port: int) -> set[int]:
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != _TCP_LISTEN:
                continue
            local_port = int(cols[1].rpartition(":")[2], 16)
            if local_port == port:
                inodes.add(int(cols[9]))
    inodes.discard(0)
    return inodes


def listening_pids(port: int) -> set[int]:
    """Pids of the processes holding a LISTEN socket on `port` (TCP, IPv4 or IPv6), found via /proc, never by name.

    Processes of other users whose file descriptors we cannot read are not found (and could not be signalled).
    """
    inodes = _listen_inodes(port)
    if not inodes:
        return set()
    wanted = {f"socket:[{i}]" for i in inodes}
    pids: set[int] = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    pids.add(int(entry.name))
                    break
            except OSError:
                continue
    return pids


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Poll until every pid has exited or `timeout` seconds pass; return those still alive. Blocks the thread."""
    left = {p for p in pids if is_alive(p)}
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(_POLL)
        left = {p for p in left if is_alive(p)}
    return left


class Stopped(msgspec.Struct, frozen=True):
    """What `terminate` did: the pids it signalled, those it had to SIGKILL, and any that survived even that."""

    signalled: frozenset[int]
    killed: frozenset[int]
    survivors: frozenset[int]


def _signal(pids: Iterable[int], signum: int) -> set[int]:
    sent: set[int] = set()
    for pid in pids:
        try:
            os.kill(pid, signum)
            sent.add(pid)
        except ProcessLookupError:
            pass
    return sent


def terminate(pids: Iterable[int], *, grace: float, force: bool = False, kill_wait: float = 5.0) -> Stopped:
    """SIGTERM each pid (SIGKILL at once when `force`), wait up to `grace` seconds, then SIGKILL what is left.

    Never signals this process itself. Blocks the thread for at most `grace + kill_wait` seconds. PermissionError
    (another user's process) propagates.
    """
    targets = {p for p in pids if p != os.getpid() and is_alive(p)}
    if force:
        sent = _signal(targets, signal.SIGKILL)
        return Stopped(frozenset(sent), frozenset(sent), frozenset(wait_gone(sent, kill_wait)))
    sent = _signal(targets, signal.SIGTERM)
    left = wait_gone(sent, grace)
    killed = _signal(left, signal.SIGKILL)
    return Stopped(frozenset(sent), frozenset(killed), frozenset(wait_gone(killed, kill_wait)))


def free_port(port: int, *, grace: float = 0.7) -> Stopped:
    """Stop whatever listens on `port` (SIGTERM, `grace` seconds, SIGKILL) and wait until the port is released."""
    stopped = terminate(listening_pids(port) - {os.getpid()}, grace=grace)
    # The socket closes a moment after its last holder exits; poll (bounded) instead of guessing a delay.
    deadline = time.monotonic() + 5.0
    while _listen_inodes(port) and time.monotonic() < deadline and stopped.signalled:
        time.sleep(_POLL)
    return stopped
