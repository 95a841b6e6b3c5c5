"""How a gateway process is launched and reports back, without the server stack: the run loop's exit codes and
environment variables, its own command line (zipapp or venv), a detached start. `gateway status`, `stop`,
`restart` and the service install import this, not `serve`, which loads trio and the runtime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_RESTART = 75  # EX_TEMPFAIL: "restart me"; a service manager with Restart=on-failure starts us again
EXIT_CONFIG = 78  # EX_CONFIG: bad config; the unit's RestartPreventExitStatus stops a restart loop

# Environment variables of the run loop (documented in docs/cli.md).
ENV_NO_RESPAWN = "GATEWAY_NO_RESPAWN"
ENV_ALLOW_SIGUSR1 = "GATEWAY_ALLOW_SIGUSR1_RESTART"
ENV_SERVICE_MARKER = "GATEWAY_SERVICE_MARKER"
ENV_DETACHED = "GATEWAY_DETACHED"  # set by us on a respawned child: its stderr is the log file
FORCE_GRACE = 0.7  # seconds between SIGTERM and SIGKILL for what else holds the port (`serve --force`)
SIGNAL_RELOAD_TOKEN = signal.SIGUSR2  # "read the token file again"; the lock's `reloadToken` says it is understood


def stop_timeout(graceful_timeout: float) -> float:
    """Seconds to wait after SIGTERM before SIGKILL: the gateway's drain, its own 1 s bound for the rest, and margin.

    `gateway stop` and the service units both use it, so SIGKILL never cuts a drain the gateway was asked to do.
    """
    return graceful_timeout + 5.0


def env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in ("", "0", "false", "no")


def supervisor_name(env: Mapping[str, str] | None = None) -> str | None:
    """Which service manager restarts this process, if any: systemd sets INVOCATION_ID; our units set the marker."""
    env = os.environ if env is None else env
    if env.get(ENV_SERVICE_MARKER):
        return env[ENV_SERVICE_MARKER]
    if env.get("INVOCATION_ID"):
        return "systemd"
    return None


def zipapp_path() -> Path | None:
    """The .pyz this process runs from (shiv puts it in argv[0]), or None when running from a virtualenv."""
    arg0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if arg0 is not None and arg0.is_file() and zipfile.is_zipfile(arg0):
        return arg0.resolve()
    return None


def self_command() -> list[str]:
    """The interpreter and program of this very process (zipapp or venv), to respawn or install it as a service."""
    cmd = [sys.executable]
    if sys.flags.no_site:
        cmd.append("-S")  # keep the zipapp's isolation from system packages
    pyz = zipapp_path()
    return [*cmd, str(pyz)] if pyz is not None else [*cmd, "-m", "gateway"]


def respawn_argv(args: list[str]) -> list[str]:
    """This process's command line minus `--force`, which must not kill whatever took the port meanwhile."""
    return self_command() + [a for a in args if a != "--force"]


def spawn_detached(argv: list[str], log_file: Path, env: Mapping[str, str] | None = None) -> int:
    """Start `argv` in its own session, detached from our terminal; its stdout/stderr append to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**(os.environ if env is None else env), ENV_DETACHED: "1"}
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=child_env,
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid
