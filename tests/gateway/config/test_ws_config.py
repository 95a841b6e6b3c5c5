"""The config sections added for `/ws`, files and the `cli` provider: defaults, env overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.providers.cli import CliProvider
from gateway.config.file import ConfigError, load_config, parse_config
from gateway.runtime import build_providers


def test_defaults_match_the_protocol_notes(tmp_path: Path) -> None:
    config, _ = load_config(tmp_path / "none.toml", env={})
    assert config.ws.auth_timeout == 10.0
    assert config.files.max_upload_bytes == 50 * 1024 * 1024
    assert config.providers.cli.argv == [] and config.providers.cli.grace == 2.0
    assert "cli" not in build_providers(config)  # only when configured


def test_env_overrides_reach_the_new_sections(tmp_path: Path) -> None:
    env = {"GATEWAY_WS_MESSAGES_PER_MINUTE": "7", "GATEWAY_FILES_MAX_UPLOAD_BYTES": "1000"}
    config, _ = load_config(tmp_path / "none.toml", env=env)
    assert config.ws.messages_per_minute == 7 and config.files.max_upload_bytes == 1000


def test_cli_provider_is_registered_and_needs_a_command() -> None:
    config = parse_config(
        {"agent": {"provider": "cli"}, "providers": {"cli": {"argv": ["agent", "-p"], "env": {"A": "b"}}}}
    )
    cli = build_providers(config)["cli"]
    assert isinstance(cli, CliProvider) and cli.argv == ["agent", "-p"] and cli.env == {"A": "b"}
    with pytest.raises(ConfigError, match=r"providers\.cli\.argv"):
        parse_config({"agent": {"provider": "cli"}})
    with pytest.raises(ConfigError, match="ws"):
        parse_config({"ws": {"max_frame_bytes": 10}})
    with pytest.raises(ConfigError, match=r"files\.max_upload_bytes"):
        parse_config({"files": {"max_upload_bytes": 0}})
