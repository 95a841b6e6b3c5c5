"""Running as a service: the systemd user unit, the macOS LaunchAgent, the Windows scheduled task; their control."""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from gateway.daemon.launch import (
    ENV_ALLOW_SIGUSR1,
    ENV_SERVICE_MARKER,
    EXIT_CONFIG,
    EXIT_RESTART,
    self_command,
    stop_timeout,
    zipapp_path,
)

UNIT_NAME = "gateway.service"
LAUNCHD_LABEL = "dev.agent-gateway"
TASK_NAME = "Agent Gateway"


class ServiceSpec(msgspec.Struct, frozen=True):
    """What a service runs: the command (the same zipapp or venv that installed it) and its environment."""

    command: list[str]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    log_file: Path | None = None
    stop_timeout: float = 10.0


def default_shiv_root() -> Path:
    """Where a service's zipapp extracts itself: a cache folder of ours rather than shiv's default `~/.shiv`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gateway" / "shiv"


def build_spec(
    config_file: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    graceful_timeout: float = 5.0,
    log_file: Path | None = None,
    marker: str = "service",
) -> ServiceSpec:
    """The service for this process's own program (see `daemon.self_command`) serving `config_file`."""
    command = [*self_command(), "serve", "--config", str(config_file)]
    if host:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    env = {ENV_SERVICE_MARKER: marker, ENV_ALLOW_SIGUSR1: "1", "PYTHONUNBUFFERED": "1"}
    if zipapp_path() is not None:
        env["SHIV_ROOT"] = os.environ.get("SHIV_ROOT") or str(default_shiv_root())
    # The stop timeout exceeds the gateway's own bounded shutdown (graceful_timeout + 1 s) so SIGKILL is a last resort.
    return ServiceSpec(command=command, env=env, log_file=log_file, stop_timeout=stop_timeout(graceful_timeout))


def _systemd_quote(arg: str) -> str:
    # systemd splits ExecStart like a shell would for double quotes; `%` starts a specifier and must be doubled.
    arg = arg.replace("%", "%%")
    if arg and all(c.isalnum() or c in "/._-=:+,@" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(spec: ServiceSpec) -> str:
    """A systemd user unit: restart on failure, except for a bad config (exit 78), which would only loop."""
    lines = [
        "[Unit]",
        "Description=Agent gateway",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_systemd_quote(a) for a in spec.command),
        *(f"Environment={_systemd_quote(f'{k}={v}')}" for k, v in sorted(spec.env.items())),
        "Restart=on-failure",
        "RestartSec=2",
        f"RestartPreventExitStatus={EXIT_CONFIG}",
        f"RestartForceExitStatus={EXIT_RESTART}",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={int(spec.stop_timeout)}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def launchd_plist(spec: ServiceSpec) -> str:
    """A LaunchAgent: started at login, restarted after a non-zero exit (launchd cannot exempt exit 78)."""
    data: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": spec.command,
        "EnvironmentVariables": spec.env,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ExitTimeOut": int(spec.stop_timeout),
    }
    if spec.log_file is not None:
        data["StandardOutPath"] = data["StandardErrorPath"] = str(spec.log_file.with_suffix(".out"))
    return plistlib.dumps(data).decode()


def windows_task_command(spec: ServiceSpec) -> list[str]:
    """The `schtasks` command that runs the gateway at logon (environment set through `cmd /c set … &&`)."""
    sets = " && ".join(f"set {k}={v}" for k, v in sorted(spec.env.items()))
    run = subprocess.list2cmdline(spec.command)
    action = f"cmd /c {sets} && {run}" if sets else run
    return ["schtasks", "/Create", "/F", "/SC", "ONLOGON", "/RL", "LIMITED", "/TN", TASK_NAME, "/TR", action]


def platform_kind(platform: str | None = None) -> str:
    """`systemd`, `launchd` or `windows`: the service kind used on `platform` (default: this machine)."""
    platform = platform or sys.platform
    if platform.startswith("win"):
        return "windows"
    if platform == "darwin":
        return "launchd"
    return "systemd"


def unit_path(kind: str) -> Path:
    """Where the service definition is written for `kind`."""
    if kind == "launchd":
        return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def render(spec: ServiceSpec, kind: str) -> str:
    """The service definition for `kind` as text (for Windows: the command line that registers the task)."""
    if kind == "launchd":
        return launchd_plist(spec)
    if kind == "windows":
        return subprocess.list2cmdline(windows_task_command(spec)) + "\n"
    return systemd_unit(spec)


class ServiceError(Exception):
    """A service manager command failed; the message is one line that says what it means and what to do.

    `reason`: "missing" (no such manager here, or no session of it), "not_installed", or "failed".
    """

    def __init__(self, message: str, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason


# What the service managers print for the failures people hit, and what to tell them instead (lower-case needles).
_NO_SESSION = (
    "failed to connect to bus",  # systemd: no user manager (a container; su/sudo/ssh without a login session)
    "failed to connect to user scope bus",
    "$dbus_session_bus_address",
    "not been booted with systemd",  # an init other than systemd
)
_NOT_INSTALLED = (
    "could not be found",  # systemctl status
    f"unit {UNIT_NAME} not found",  # systemctl start
    "does not exist",  # systemctl disable: "Unit file gateway.service does not exist."
    "could not find service",  # launchctl
    "cannot find the file specified",  # schtasks
)
NOT_INSTALLED = "the gateway service is not installed; `gateway install` installs it"


def _explain(cmd: Sequence[str], output: str, code: int) -> ServiceError:
    text = output.lower()
    if any(needle in text for needle in _NO_SESSION):
        return ServiceError(
            f"`{cmd[0]}` cannot reach a user service manager here (no login session of this user, e.g. in a "
            "container or under su/sudo): log in as this user directly (for a machine without logins, "
            "`loginctl enable-linger $USER`), or run the gateway without a service: `gateway serve`",
            "missing",
        )
    if any(needle in text for needle in _NOT_INSTALLED):
        return ServiceError(NOT_INSTALLED, "not_installed")
    lines = output.strip().splitlines()
    return ServiceError(f"`{shlex.join(cmd)}` failed: {lines[-1] if lines else f'exit {code}'}")


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(cmd[0]) is None:
        raise ServiceError(f"`{cmd[0]}` is not available here; run by hand where it is: {shlex.join(cmd)}", "missing")
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"`{shlex.join(cmd)}` failed: {exc}") from None
    return proc


def _check(cmd: Sequence[str]) -> str:
    proc = _run(cmd)
    if proc.returncode != 0:
        raise _explain(cmd, proc.stderr or proc.stdout, proc.returncode)
    return proc.stdout


def install(spec: ServiceSpec, kind: str) -> Path | None:
    """Write the service definition and enable it. Raises ServiceError (the file stays written) if enabling fails."""
    if kind == "windows":
        _check(windows_task_command(spec))
        return None
    path = unit_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(spec, kind))
    if kind == "launchd":
        _check(["launchctl", "load", "-w", str(path)])
    else:
        _check(["systemctl", "--user", "daemon-reload"])
        _check(["systemctl", "--user", "enable", UNIT_NAME])
    return path


def uninstall(kind: str) -> Path | None:
    """Stop and disable the service and remove its definition; the file is removed even if the manager fails.

    Returns the removed file (None when nothing was installed); raises ServiceError when the manager could not be
    told, with what to do about it.
    """
    if kind == "windows":
        try:
            _check(["schtasks", "/Delete", "/F", "/TN", TASK_NAME])
        except ServiceError as exc:
            if exc.reason != "not_installed":
                raise
        return None
    path = unit_path(kind)
    existed = path.exists()
    disable = ["launchctl", "unload", "-w", str(path)] if kind == "launchd" else ["systemctl", "--user", "disable"]
    if kind == "systemd":
        disable += ["--now", UNIT_NAME]
    failure: ServiceError | None = None
    try:
        _check(disable)
    except ServiceError as exc:
        if exc.reason != "not_installed":
            failure = exc
    path.unlink(missing_ok=True)
    if kind == "systemd" and failure is None:
        try:
            _check(["systemctl", "--user", "daemon-reload"])
        except ServiceError as exc:
            failure = exc
    if failure is not None:
        removed = f"removed {path}, but " if existed else ""
        raise ServiceError(f"{removed}{failure}", failure.reason)
    return path if existed else None


def start(kind: str) -> None:
    """Start the installed service through its manager."""
    if kind == "launchd":
        _check(["launchctl", "start", LAUNCHD_LABEL])
    elif kind == "windows":
        _check(["schtasks", "/Run", "/TN", TASK_NAME])
    else:
        _check(["systemctl", "--user", "start", UNIT_NAME])


def status_text(kind: str) -> tuple[int, str]:
    """The service manager's own report on the service, and its exit code (non-zero: not running or not installed).

    Raises ServiceError when there is no report to give: no manager here, or the service is not installed.
    """
    if kind == "launchd":
        cmd = ["launchctl", "list", LAUNCHD_LABEL]
    elif kind == "windows":
        cmd = ["schtasks", "/Query", "/TN", TASK_NAME]
    else:
        cmd = ["systemctl", "--user", "status", "--no-pager", UNIT_NAME]
    proc = _run(cmd)
    if proc.returncode != 0 and proc.stderr.strip():
        # Only the manager's own complaint (stderr): the report on stdout quotes the gateway's log lines.
        explained = _explain(cmd, proc.stderr, proc.returncode)
        if explained.reason != "failed":
            raise explained
    return proc.returncode, (proc.stdout + proc.stderr).strip()
