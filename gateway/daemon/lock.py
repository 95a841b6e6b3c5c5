"""The gateway lock: one file per config (`<data_dir>/locks/gateway.<sha256>.lock`), taken atomically, stale-proof."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gateway.config.file import Paths
from gateway.daemon.procs import is_alive, process_start_time


class LockInfo(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """What the lock file holds. `pid`, `createdAt`, `configPath`, `startTime` are written when it is taken;
    the rest once the gateway is serving, so `gateway status` and `restart` know where and how to reach it."""

    pid: int
    created_at: str
    config_path: str
    start_time: int | None
    version: str = ""
    argv: list[str] = msgspec.field(default_factory=list)
    port: int | None = None
    url: str | None = None
    sigusr1: bool = False  # the process treats SIGUSR1 as "restart" (else SIGUSR1 would kill it)
    reload_token: bool = False  # the process re-reads its token file on SIGUSR2 (`gateway token --rotate`)
    supervisor: str | None = None  # "systemd", "launchd", … when a service manager restarts it
    # Its server.graceful_timeout: `gateway stop` waits for the drain it asks for before any SIGKILL.
    graceful_timeout: float | None = None


class LockHeldError(Exception):
    """Another live gateway holds the lock for this config."""

    def __init__(self, path: Path, info: LockInfo) -> None:
        super().__init__(f"another gateway (pid {info.pid}) already runs with config {info.config_path}")
        self.path = path
        self.info = info


def lock_path(paths: Paths) -> Path:
    """The lock file for this config: named by the sha256 of the resolved config path, in `<data_dir>/locks/`."""
    digest = hashlib.sha256(str(paths.config_file.resolve()).encode()).hexdigest()
    return paths.data_dir / "locks" / f"gateway.{digest}.lock"


def read_lock(path: Path) -> LockInfo | None:
    """The lock's content, or None when there is no lock file or it is unreadable."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=LockInfo)
    except (OSError, msgspec.DecodeError):
        return None


def is_stale(info: LockInfo) -> bool:
    """A lock is stale when its pid is gone, or the pid now names another process (its start time differs)."""
    if not is_alive(info.pid):
        return True
    if info.start_time is None:
        return False
    return process_start_time(info.pid) not in (None, info.start_time)


def live_lock(paths: Paths) -> LockInfo | None:
    """The lock of the gateway running with this config, or None when none runs (a stale lock counts as none)."""
    info = read_lock(lock_path(paths))
    return None if info is None or is_stale(info) else info


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    # Taking over a stale lock is check-then-replace; an flock on a sibling file that is never deleted makes that
    # step atomic between concurrent starters (the lock file itself is deleted, so it cannot carry the flock).
    import fcntl  # POSIX only; imported here so that `gateway install` still renders the Windows task

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".guard"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_new(path: Path, info: LockInfo) -> None:
    """Create `path` holding `info` atomically: complete content or no file, never a half-written lock."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(info))
    try:
        os.link(tmp, path)  # fails with FileExistsError if the lock exists: the atomic "take"
    finally:
        tmp.unlink(missing_ok=True)


def _replace(path: Path, info: LockInfo) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(info))
    os.replace(tmp, path)


class GatewayLock:
    """A held lock. `update()` records where the gateway listens; `release()` removes the file if it is still ours."""

    def __init__(self, path: Path, info: LockInfo) -> None:
        self.path = path
        self.info = info

    def update(self, **changes: object) -> None:
        self.info = msgspec.structs.replace(self.info, **changes)
        with _guard(self.path):
            if self._ours():
                _replace(self.path, self.info)

    def _ours(self) -> bool:
        current = read_lock(self.path)
        return current is not None and (current.pid, current.start_time) == (self.info.pid, self.info.start_time)

    def release(self) -> None:
        """Remove the lock file. On a disk gone read-only it stays behind, stale: the next start replaces it."""
        try:
            with _guard(self.path):
                if self._ours():
                    self.path.unlink(missing_ok=True)
        except OSError as exc:
            logging.getLogger("gateway.lock").warning("the lock file %s stays (%s)", self.path, exc.strerror)


def acquire(
    paths: Paths,
    *,
    argv: list[str] | None = None,
    version: str = "",
    supervisor: str | None = None,
    graceful_timeout: float | None = None,
) -> GatewayLock:
    """Take the lock for `paths.config_file`, replacing a stale one. Raises LockHeldError if a live gateway holds it."""
    path = lock_path(paths)
    pid = os.getpid()
    info = LockInfo(
        pid=pid,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        config_path=str(paths.config_file.resolve()),
        start_time=process_start_time(pid),
        version=version,
        argv=list(argv or []),
        supervisor=supervisor,
        graceful_timeout=graceful_timeout,
    )
    with _guard(path):
        for _ in range(3):
            try:
                _write_new(path, info)
                return GatewayLock(path, info)
            except FileExistsError:
                pass
            held = read_lock(path)
            if held is not None and not is_stale(held) and held.pid != pid:
                raise LockHeldError(path, held)
            # Stale (or unreadable: a lock is written whole, so unreadable means corrupt): remove it and retry.
            path.unlink(missing_ok=True)
            time.sleep(0.01)
    raise LockHeldError(path, read_lock(path) or info)


def remove_if_stale(paths: Paths) -> bool:
    """Delete this config's lock when its holder is gone (after a crash or SIGKILL); True if one was removed."""
    path = lock_path(paths)
    with _guard(path):
        info = read_lock(path)
        if path.exists() and (info is None or is_stale(info)):
            path.unlink(missing_ok=True)
            return True
    return False
