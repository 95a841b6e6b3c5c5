"""The lock file: atomic take, refusal while held, stale after the holder dies or its pid is reused, release."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from gateway.config.file import Paths
from gateway.daemon.lock import LockHeldError, acquire, is_stale, live_lock, lock_path, read_lock, remove_if_stale
from gateway.daemon.procs import process_start_time
from tests.conftest import make_config


def _paths(tmp_path: Path) -> Paths:
    return make_config(tmp_path)[1]


def test_lock_path_is_named_by_the_sha256_of_the_config_path(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    digest = hashlib.sha256(str(paths.config_file.resolve()).encode()).hexdigest()
    assert lock_path(paths) == paths.data_dir / "locks" / f"gateway.{digest}.lock"


def test_acquire_writes_pid_createdat_configpath_starttime_and_release_removes_it(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    lock = acquire(paths, argv=["gateway", "serve"], version="9")
    raw = msgspec.json.decode(lock_path(paths).read_bytes())
    assert raw["pid"] == os.getpid()
    assert raw["configPath"] == str(paths.config_file.resolve())
    assert raw["startTime"] == process_start_time(os.getpid())
    assert raw["createdAt"].endswith("Z")
    lock.update(port=1234, url="http://127.0.0.1:1234")
    info = live_lock(paths)
    assert info is not None and info.port == 1234 and info.url == "http://127.0.0.1:1234"
    lock.release()
    assert not lock_path(paths).exists()


def test_a_live_holder_refuses_a_second_acquire(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        start = process_start_time(holder.pid)
        assert start is not None
        lock_path(paths).parent.mkdir(parents=True)
        lock_path(paths).write_bytes(
            msgspec.json.encode(
                {"pid": holder.pid, "createdAt": "x", "configPath": str(paths.config_file), "startTime": start}
            )
        )
        with pytest.raises(LockHeldError) as err:
            acquire(paths)
        assert err.value.info.pid == holder.pid
        assert not remove_if_stale(paths)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # Once the holder is gone its lock is stale and a new start takes it over.
    info = read_lock(lock_path(paths))
    assert info is not None and is_stale(info)
    lock = acquire(paths)
    assert lock.info.pid == os.getpid()
    lock.release()


def test_a_reused_pid_with_another_start_time_is_stale(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    lock = acquire(paths)
    # Our own pid, but as if it had been started at another time: the pid now names another process.
    lock_path(paths).write_bytes(
        msgspec.json.encode(msgspec.structs.replace(lock.info, start_time=(lock.info.start_time or 0) + 1))
    )
    info = read_lock(lock_path(paths))
    assert info is not None and is_stale(info)
    assert live_lock(paths) is None
    # release() removes only a lock that is still ours; this one no longer is.
    lock.release()
    assert lock_path(paths).exists()
    assert remove_if_stale(paths)


def test_a_corrupt_lock_is_replaced(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    lock_path(paths).parent.mkdir(parents=True)
    lock_path(paths).write_text("{not json")
    lock = acquire(paths)
    assert read_lock(lock_path(paths)) == lock.info
    lock.release()
