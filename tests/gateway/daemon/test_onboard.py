"""`gateway onboard` through real processes: scripted with flags, and interactive with answers fed on stdin; the
config it writes serves, and its admin signs in."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from gateway.config.file import load_config
from tests.gateway.harness import CLI_TIMEOUT, Site, free_port, wait_for

KEY = "sk-test-0123456789abcdef-onboard"
PASSWORD = "a long admin password"


def _onboard(site: Site, config: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*site.command, "onboard", "--config", str(config), *args],
        env={**site.env, **env}, input=stdin, capture_output=True, text=True, timeout=CLI_TIMEOUT,
    )  # fmt: skip


def _users(site: Site, config: Path) -> list[str]:
    r = subprocess.run(
        [*site.command, "user", "list", "--json", "--config", str(config)],
        env=site.env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return [f"{u['username']}:{u['role']}" for u in json.loads(r.stdout)]


def test_scripted_onboarding_writes_a_config_that_serves_and_an_admin_that_signs_in(tmp_path: Path) -> None:
    site = Site(tmp_path)
    config = tmp_path / "onboarded" / "config.toml"
    secret_file = tmp_path / "admin-password"
    secret_file.write_text(PASSWORD + "\n")
    port = free_port()
    args = [
        "--provider", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m1", "--api-key-env", "MY_KEY",
        "--port", str(port), "--admin-user", "root", "--admin-password-file", str(secret_file),
        "--no-install-service", "--yes",
    ]  # fmt: skip
    r = _onboard(site, config, *args, MY_KEY=KEY)
    assert r.returncode == 0, r.stderr
    assert KEY not in r.stdout + r.stderr and PASSWORD not in r.stdout + r.stderr
    assert f"wrote {config}" in r.stderr and "created the admin root" in r.stderr and "gateway dashboard" in r.stderr
    assert config.stat().st_mode & 0o777 == 0o600 and config.parent.stat().st_mode & 0o777 == 0o700
    loaded, _ = load_config(config, env={})
    assert loaded.server.port == port and loaded.agent.provider == "openai"
    assert (loaded.providers.openai.api_key, loaded.providers.openai.model) == (KEY, "m1")
    assert loaded.providers.openai.base_url == "http://127.0.0.1:9/v1"
    assert _users(site, config) == ["root:super_admin"]

    # An existing config is kept unless --force; with it, the old one is kept aside.
    before = config.read_text()
    again = _onboard(site, config, "--yes")
    assert again.returncode == 1 and "exists already" in again.stderr and "--force" in again.stderr
    assert config.read_text() == before

    # The config serves on its port, and the admin it made signs in.
    proc = subprocess.Popen(
        [*site.command, "serve", "--config", str(config)], env=site.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            def up() -> bool | None:
                try:
                    return http.get("/health").status_code == 200 or None
                except httpx.HTTPError:
                    return None

            wait_for(up, timeout=CLI_TIMEOUT, what="the onboarded gateway")
            login = http.post("/api/auth/login", json={"username": "root", "password": PASSWORD})
            assert login.status_code == 200 and login.json()["user"]["role"] == "super_admin"
    finally:
        proc.terminate()
        proc.wait(timeout=CLI_TIMEOUT)

    forced = _onboard(site, config, "--yes", "--force", "--port", "9999")
    assert forced.returncode == 0, forced.stderr
    assert (config.parent / "config.toml.bak").read_text() == before
    assert load_config(config, env={})[0].server.port == 9999


def test_interactive_onboarding_reads_the_answers_from_stdin(tmp_path: Path) -> None:
    site = Site(tmp_path)
    config = tmp_path / "interactive.toml"
    port = free_port()
    answers = [
        "ollama",  # not a provider: asked again
        "openai",
        "http://127.0.0.1:11434/v1",
        "",  # the default model
        KEY,
        "99999",  # not a port: asked again
        str(port),
        "admin",
        PASSWORD,
        PASSWORD,
        "n",  # no service
    ]
    r = _onboard(site, config, stdin="\n".join(answers) + "\n")
    assert r.returncode == 0, r.stderr
    assert "one of: echo, openai" in r.stderr and "not a port number" in r.stderr
    assert "install a user service" in r.stderr and "installed" not in r.stderr
    assert KEY not in r.stdout + r.stderr and PASSWORD not in r.stdout + r.stderr
    loaded, _ = load_config(config, env={})
    assert (loaded.agent.provider, loaded.providers.openai.model, loaded.server.port) == ("openai", "gpt-4o-mini", port)
    assert loaded.providers.openai.api_key == KEY
    assert _users(site, config) == ["admin:super_admin"]


def test_interactive_onboarding_refuses_passwords_that_differ_and_writes_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path)
    config = tmp_path / "c.toml"
    r = _onboard(site, config, "--provider", "echo", "--port", "8800", stdin="admin\nfirst password\nother password\n")
    assert r.returncode == 2 and "the passwords differ" in r.stderr
    assert not config.exists()
    short = _onboard(site, config, "--provider", "echo", "--port", "8800", stdin="a\nadmin\nshort\n")
    assert "a username is 3-32" in short.stderr and "at least 8" in short.stderr  # both asked again
    assert short.returncode == 2 and "end of input" in short.stderr and not config.exists()
    eof = _onboard(site, config, stdin="")
    assert eof.returncode == 2 and "end of input" in eof.stderr and not config.exists()


def test_scripted_mistakes_are_usage_errors(tmp_path: Path) -> None:
    site = Site(tmp_path)
    config = tmp_path / "c.toml"
    no_password = _onboard(site, config, "--yes", "--admin-user", "root")
    assert no_password.returncode == 2 and "--admin-password-file" in no_password.stderr
    unset = _onboard(site, config, "--yes", "--provider", "openai", "--api-key-env", "NOT_SET_ANYWHERE")
    assert unset.returncode == 2 and "NOT_SET_ANYWHERE is not set" in unset.stderr
    both = _onboard(site, config, "--yes", "--api-key-env", "A", "--api-key-file", "B")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    bad_name = _onboard(site, config, "--yes", "--admin-user", "x")
    assert bad_name.returncode == 2 and "3-32" in bad_name.stderr
    stray = _onboard(site, config, "--yes", "--provider", "echo", "--model", "m")
    assert stray.returncode == 2 and "go with --provider openai" in stray.stderr
    assert not config.exists()


def test_the_service_is_installed_when_asked(tmp_path: Path) -> None:
    site = Site(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.log"
    fake = bin_dir / "systemctl"  # a stand-in for systemd's: records how it was called
    fake.write_text('#!/bin/sh\necho "$*" >> "$SYSTEMCTL_LOG"\nexit 0\n')
    fake.chmod(0o755)
    config = tmp_path / "c.toml"
    r = _onboard(
        site, config, "--yes", "--install-service",
        PATH=f"{bin_dir}:{os.environ['PATH']}", SYSTEMCTL_LOG=str(calls),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    unit = Path(site.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "gateway.service"
    assert f"--config {config}" in unit.read_text() or str(config) in unit.read_text()
    assert "--user enable gateway.service" in calls.read_text()
    assert "gateway service-start" in r.stderr
