"""Service definitions by content: the systemd unit, the LaunchAgent plist, the Windows task; `gateway install`."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.daemon import os_service
from gateway.daemon.launch import EXIT_CONFIG, self_command
from tests.gateway.harness import CLI_TIMEOUT, Site


def _spec(zipapp: bool = False) -> os_service.ServiceSpec:
    command = ["/usr/bin/python3", "-S", "/opt/gw/gateway.pyz"] if zipapp else ["/srv/venv/bin/python", "-m", "gateway"]
    env = {"GATEWAY_SERVICE_MARKER": "systemd", "GATEWAY_ALLOW_SIGUSR1_RESTART": "1"}
    if zipapp:
        env["SHIV_ROOT"] = "/home/pi/.cache/gateway/shiv"
    return os_service.ServiceSpec(
        command=[*command, "serve", "--config", "/home/pi/my config/gateway.toml", "--port", "8741"],
        env=env,
        log_file=Path("/home/pi/.local/share/gateway/logs/gateway.log"),
        stop_timeout=10,
    )


def test_the_systemd_unit_restarts_on_failure_but_not_after_a_bad_config() -> None:
    unit = os_service.systemd_unit(_spec(zipapp=True))
    lines = unit.splitlines()
    assert "[Service]" in lines and "[Install]" in lines
    assert "Restart=on-failure" in lines
    assert f"RestartPreventExitStatus={EXIT_CONFIG}" in lines
    assert "RestartForceExitStatus=75" in lines  # SIGUSR1 restart: exit 75 and be started again
    assert "Environment=SHIV_ROOT=/home/pi/.cache/gateway/shiv" in lines
    assert "Environment=GATEWAY_SERVICE_MARKER=systemd" in lines
    assert "Environment=GATEWAY_ALLOW_SIGUSR1_RESTART=1" in lines
    assert "WantedBy=default.target" in lines
    assert "TimeoutStopSec=10" in lines
    # The same file that was installed, with a path holding a space quoted for systemd.
    assert (
        'ExecStart=/usr/bin/python3 -S /opt/gw/gateway.pyz serve --config "/home/pi/my config/gateway.toml" '
        "--port 8741" in lines
    )


def test_a_venv_unit_runs_the_venv_and_sets_no_shiv_root() -> None:
    unit = os_service.systemd_unit(_spec(zipapp=False))
    assert "ExecStart=/srv/venv/bin/python -m gateway serve" in unit
    assert "SHIV_ROOT" not in unit


def test_build_spec_uses_this_very_program() -> None:
    spec = os_service.build_spec(Path("/etc/gw.toml"), host="0.0.0.0", port=9000, graceful_timeout=5)
    assert spec.command == [*self_command(), "serve", "--config", "/etc/gw.toml", "--host", "0.0.0.0", "--port", "9000"]
    assert spec.command[0] == sys.executable
    assert "SHIV_ROOT" not in spec.env  # the tests run from the venv, not the zipapp
    assert spec.stop_timeout > 5


def test_the_launchagent_plist() -> None:
    data = plistlib.loads(os_service.launchd_plist(_spec(zipapp=True)).encode())
    assert data["Label"] == os_service.LAUNCHD_LABEL
    assert data["ProgramArguments"][:3] == ["/usr/bin/python3", "-S", "/opt/gw/gateway.pyz"]
    assert data["EnvironmentVariables"]["SHIV_ROOT"] == "/home/pi/.cache/gateway/shiv"
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}


def test_the_windows_task_command() -> None:
    cmd = os_service.windows_task_command(_spec())
    assert cmd[:2] == ["schtasks", "/Create"]
    assert cmd[cmd.index("/SC") + 1] == "ONLOGON"
    assert cmd[cmd.index("/TN") + 1] == os_service.TASK_NAME
    action = cmd[cmd.index("/TR") + 1]
    assert "set GATEWAY_SERVICE_MARKER=systemd" in action
    assert '"/home/pi/my config/gateway.toml"' in action


@pytest.mark.parametrize(
    ("platform", "needle"),
    [("linux", "RestartPreventExitStatus=78"), ("darwin", "<key>ProgramArguments</key>"), ("win32", "schtasks")],
)
def test_install_print_renders_for_each_platform(tmp_path: Path, platform: str, needle: str) -> None:
    site = Site(tmp_path)
    r = site.cli("install", "--print", "--platform", platform, "--port", "9001")
    assert r.returncode == 0, r.stderr
    assert needle in r.stdout
    assert "--port" in r.stdout and "9001" in r.stdout
    assert str(site.paths.config_file) in r.stdout


def test_install_writes_the_unit_and_says_what_to_do_without_systemctl(tmp_path: Path) -> None:
    site = Site(tmp_path)
    # No systemctl on PATH (as in a container): the unit is still written, and the message says what to run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {**site.env, "PATH": str(bin_dir)}
    r = subprocess.run(
        site.argv("install", "--token", "a-strong-token-of-sufficient-length"),
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    unit = Path(site.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "gateway.service"
    assert r.returncode == 1
    assert f"wrote {unit}" in r.stderr
    assert "`systemctl` is not available here" in r.stderr and "daemon-reload" in r.stderr
    assert "Traceback" not in r.stderr
    assert "RestartPreventExitStatus=78" in unit.read_text()
    assert site.paths.token_file.read_text().strip() == "a-strong-token-of-sufficient-length"
    assert site.paths.token_file.stat().st_mode & 0o777 == 0o600


def test_install_refuses_a_weak_token(tmp_path: Path) -> None:
    site = Site(tmp_path)
    r = site.cli("install", "--token", "changeme")
    assert r.returncode == 78 and "placeholder" in r.stderr
    assert not site.paths.token_file.exists()


def test_service_commands_fail_clearly_without_a_service_manager(tmp_path: Path) -> None:
    site = Site(tmp_path)
    env = {**site.env, "PATH": str(tmp_path)}
    for command in ("service-start", "service-status", "uninstall"):
        r = subprocess.run(
            [*site.command, command], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=os.getcwd()
        )
        assert r.returncode == 1, (command, r.stderr)
        assert "is not available here" in r.stderr and "Traceback" not in r.stderr


_FAKE_SYSTEMCTL = """#!/bin/sh
# A stand-in for systemd's systemctl: records how it was called; `status` answers like systemd does.
echo "$*" >> "$SYSTEMCTL_LOG"
if [ "$2" = "status" ]; then echo "gateway.service - agent gateway"; echo "   Active: active (running)"; exit 0; fi
exit 0
"""


def _with_systemctl(tmp_path: Path, script: str) -> tuple[Site, dict[str, str]]:
    site = Site(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(script)
    fake.chmod(0o755)
    return site, {**site.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_install_start_status_uninstall_drive_systemctl(tmp_path: Path) -> None:
    site, env = _with_systemctl(tmp_path, _FAKE_SYSTEMCTL)
    calls = tmp_path / "systemctl.log"
    env["SYSTEMCTL_LOG"] = str(calls)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [*site.command, *args] if args[0] != "install" else site.argv(*args)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)

    unit = Path(site.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "gateway.service"
    installed = run("install", "--port", "9123")
    assert installed.returncode == 0, installed.stderr
    assert "--port 9123" in unit.read_text() and str(site.config_file) in unit.read_text()
    started = run("service-start")
    assert started.returncode == 0, started.stderr
    status = run("service-status")
    assert status.returncode == 0 and "Active: active (running)" in status.stdout
    removed = run("uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert calls.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable gateway.service",
        "--user start gateway.service",
        "--user status --no-pager gateway.service",
        "--user disable --now gateway.service",
        "--user daemon-reload",
    ]


# systemctl as it answers where there is no user session (a container, su/sudo) and where the unit is not
# installed: the real messages of systemd, on stderr, with its exit codes.
_SYSTEMCTL_NO_SESSION = """#!/bin/sh
echo "Failed to connect to bus: No medium found" >&2
exit 1
"""
_SYSTEMCTL_NOT_INSTALLED = """#!/bin/sh
case "$2" in
  status) echo "Unit gateway.service could not be found." >&2; exit 4 ;;
  start) echo "Failed to start gateway.service: Unit gateway.service not found." >&2; exit 5 ;;
  disable) echo "Failed to disable unit: Unit file gateway.service does not exist." >&2; exit 1 ;;
esac
exit 0
"""


def _run(site: Site, env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*site.command, command], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)


def test_service_commands_explain_a_missing_user_session_in_one_line(tmp_path: Path) -> None:
    site, env = _with_systemctl(tmp_path, _SYSTEMCTL_NO_SESSION)
    unit = Path(site.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "gateway.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    for command in ("service-status", "service-start", "uninstall"):
        r = _run(site, env, command)
        assert r.returncode == 1, (command, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (command, r.stderr)
        assert "Failed to connect to bus" not in r.stderr, "the raw systemctl message is translated"
        assert "cannot reach a user service manager" in r.stderr and "`gateway serve`" in r.stderr
        assert r.stdout == ""
    assert not unit.exists(), "uninstall removes the file even when systemd cannot be told"


def test_service_commands_say_when_the_service_is_not_installed(tmp_path: Path) -> None:
    site, env = _with_systemctl(tmp_path, _SYSTEMCTL_NOT_INSTALLED)
    status = _run(site, env, "service-status")
    assert status.returncode == 3, status.stderr
    assert status.stderr.strip() == "error: the gateway service is not installed; `gateway install` installs it"
    assert status.stdout == ""
    started = _run(site, env, "service-start")
    assert started.returncode == 1
    assert started.stderr.strip() == "error: the gateway service is not installed; `gateway install` installs it"
    removed = _run(site, env, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert removed.stderr.strip() == "the systemd service is not installed"
