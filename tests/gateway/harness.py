"""Real `gateway` processes for the CLI tests: a config in a temporary folder, spawning, polling with deadlines."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx
import pytest

from gateway.config.file import Paths, load_config, paths_for
from gateway.daemon.lock import LockInfo, live_lock

T = TypeVar("T")
# Generous bounds: the machine has 2 cores shared with other test runs.
START_TIMEOUT = 60.0
CLI_TIMEOUT = 60.0


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll `check` until it returns something other than None; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def end_process(proc: subprocess.Popen[bytes], sig: int, *, timeout: float = CLI_TIMEOUT) -> int | None:
    """Send `sig` and wait for the exit code; a process still running after `timeout` is killed (None)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def require_program(path: str, package: str) -> None:
    """Skip the test when Debian's `package` (which .ci/run installs) is missing; in CI, fail it instead."""
    if not os.path.exists(path):
        why = f"{path} is missing: `apt-get install {package}` (.ci/run does it)"
        if os.environ.get("CI"):  # in CI a missing program is a broken install, not a reason to skip
            pytest.fail(why)
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Site:
    """One gateway installation under `root`: its config file, environment and the command that runs it."""

    def __init__(self, root: Path, *, command: Sequence[str] | None = None, port: int = 0, **env: str) -> None:
        self.root = root
        self.config_file = root / "config.toml"
        self.config_file.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\ngraceful_timeout = 2.0\n\n'
            f'[storage]\ndata_dir = "{root / "data"}"\n'
        )
        self.command = list(command or [sys.executable, "-m", "gateway"])
        self.env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(root / "xdg-config"),
            "XDG_DATA_HOME": str(root / "xdg-data"),
            "XDG_CACHE_HOME": str(root / "xdg-cache"),
            "GATEWAY_NO_RESPAWN": "1",
            "NO_COLOR": "1",
            **env,
        }
        for name in ("INVOCATION_ID", "GATEWAY_SERVICE_MARKER", "GATEWAY_ALLOW_SIGUSR1_RESTART", "GATEWAY_DETACHED"):
            if name not in env:
                self.env.pop(name, None)
        config, path = load_config(self.config_file, env={})
        self.paths: Paths = paths_for(config, path)
        self._procs: list[subprocess.Popen[bytes]] = []

    def argv(self, *args: str) -> list[str]:
        # --config goes after the subcommand, where argparse expects it.
        return [*self.command, args[0], "--config", str(self.config_file), *args[1:]]

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def spawn(self, *args: str, stdout: IO[bytes] | int | None = None) -> subprocess.Popen[bytes]:
        if stdout is not None:
            proc = subprocess.Popen(self.argv(*args), env=self.env, stdout=stdout, stderr=subprocess.STDOUT)
        else:
            with (self.root / "serve.out").open("ab") as out:  # the child keeps its own copy of the descriptor
                proc = subprocess.Popen(self.argv(*args), env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(proc)
        return proc

    def lock(self) -> LockInfo | None:
        return live_lock(self.paths)

    def wait_serving(self, *, not_pid: int | None = None, timeout: float = START_TIMEOUT) -> LockInfo:
        """Wait until a gateway (other than `not_pid`) holds the lock, has recorded its URL and answers /health."""

        def check() -> LockInfo | None:
            info = self.lock()
            if info is None or info.url is None or info.pid == not_pid:
                return None
            try:
                return info if httpx.get(f"{info.url}/health", timeout=2).status_code == 200 else None
            except httpx.HTTPError:
                return None

        return wait_for(check, timeout=timeout, what=f"a gateway serving with {self.config_file}")

    def output(self) -> str:
        path = self.root / "serve.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        """Stop whatever this site left running (the lock holder too: a respawned child is not our Popen)."""
        info = self.lock()
        if info is not None:
            try:
                os.kill(info.pid, 9)
            except ProcessLookupError:
                pass
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


class LineReader:
    """Collects a pipe's lines on a thread, so a test can wait for one with a deadline instead of blocking."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            self.lines.put(raw.decode(errors="replace"))

    def wait_line(self, needle: str, *, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {needle!r} within {timeout} s; saw:\n{''.join(self.seen)}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if needle in line:
                return line
