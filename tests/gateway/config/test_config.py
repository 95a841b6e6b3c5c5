"""Config loading: TOML, env overrides, validation messages, token generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.file import ConfigError, ensure_token, load_config, parse_config, paths_for


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config, path = load_config(tmp_path / "missing.toml", env={})
    assert config.server.port == 8741
    assert config.server.host == "127.0.0.1"
    assert config.agent.provider == "echo"
    assert path == (tmp_path / "missing.toml").resolve()


def test_toml_then_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[cors]\nenabled = true\n')
    config, _ = load_config(f, env={"GATEWAY_SERVER_PORT": "9100", "GATEWAY_CORS_ORIGINS": "http://a, http://b"})
    assert config.server.port == 9100
    assert config.server.host == "0.0.0.0"
    assert config.cors.enabled is True
    assert config.cors.origins == ["http://a", "http://b"]
    assert config.usage.daily_token_cap is None  # no cap unless one is set
    config, _ = load_config(f, env={"GATEWAY_USAGE_DAILY_TOKEN_CAP": "50000"})
    assert config.usage.daily_token_cap == 50000 and config.usage.unowned_daily_token_cap is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"port": "x"}}, "setting server.port"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"prot": 1}}, "unknown field `prot`"),
        ({"server": {"token": "changeme"}}, "placeholder"),
        ({"server": {"token": "short"}}, "too short"),
        ({"agent": {"provider": "magic"}}, "unknown provider"),
        ({"server": {"file_access": "everything"}}, "server.file_access"),
        ({"sessions": {"idle_timeout": 0}}, "sessions.idle_timeout"),
        ({"usage": {"daily_token_cap": 0}}, "usage.daily_token_cap must be >= 1"),
        ({"usage": {"unowned_daily_token_cap": -5}}, "usage.unowned_daily_token_cap"),
        ({"usage": {"daily_token_cap": "lots"}}, "usage.daily_token_cap"),
    ],
)
def test_invalid_settings_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_bad_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})


def test_token_is_generated_once_and_kept(tmp_path: Path) -> None:
    config = parse_config({"storage": {"data_dir": str(tmp_path / "d")}})
    paths = paths_for(config, tmp_path / "c.toml")
    token, generated = ensure_token(config, paths)
    assert generated and len(token) >= 32
    again, generated_again = ensure_token(config, paths)
    assert again == token and not generated_again
    assert paths.token_file.stat().st_mode & 0o777 == 0o600


def test_a_placeholder_in_the_token_file_is_refused(tmp_path: Path) -> None:
    config = parse_config({"storage": {"data_dir": str(tmp_path / "d")}})
    paths = paths_for(config, tmp_path / "c.toml")
    paths.data_dir.mkdir(parents=True)
    paths.token_file.write_text("changeme\n")
    with pytest.raises(ConfigError, match="placeholder"):
        ensure_token(config, paths)


def test_the_e2e_api_seeds_table_sets_the_same_settings(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    # The seed's [api] table, every field of it, as its users have it.
    f.write_text(
        '[api]\nenabled = true\nhost = "0.0.0.0"\nport = 9741\ntoken = "a-long-enough-token-123"\n'
        "chat_id = 0\nallow_public = true\n"
    )
    config, _ = load_config(f, env={})
    s = config.server
    assert (s.host, s.port, s.token, s.allow_public) == ("0.0.0.0", 9741, "a-long-enough-token-123", True)
    assert s.chat_id == 1, "the seed's chat_id 0 means the default chat"
    assert config.api.enabled is True
    # The environment still overrides, whichever table the file used.
    config, _ = load_config(f, env={"GATEWAY_SERVER_PORT": "9100", "GATEWAY_API_ENABLED": "false"})
    assert config.server.port == 9100 and config.api.enabled is False
    f.write_text("[api]\nchat_id = 42\n")
    assert load_config(f, env={})[0].server.chat_id == 42


def test_the_gateway_seeds_table_sets_the_same_settings() -> None:
    config = parse_config(
        {
            "gateway": {
                "host": "127.0.0.2",
                "port": 18790,
                "auth": {"enabled": True, "api_key": "a-long-enough-token-123"},
                "cors": {"enabled": True, "origins": ["http://localhost:3000"], "credentials": True},
            }
        }
    )
    assert (config.server.host, config.server.port, config.server.token) == (
        "127.0.0.2",
        18790,
        "a-long-enough-token-123",
    )
    assert config.cors.enabled and config.cors.origins == ["http://localhost:3000"] and config.cors.credentials


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"api": {"port": 1}, "server": {"port": 2}}, r"api\.port and server\.port disagree"),
        ({"api": {"prot": 1}}, r"api\.prot: unknown field"),
        ({"api": {"enabled": "maybe"}}, r"setting api\.enabled"),
        ({"gateway": {"auth": {"enabled": False}}}, r"gateway\.auth\.enabled: this gateway always requires"),
        ({"gateway": {"auth": {"api_key": "your-secret-token"}}}, "placeholder"),  # the seed's example key
        ({"gateway": "yes"}, "expected a table"),
    ],
)
def test_seed_tables_are_validated_by_name(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_a_bad_environment_variable_is_named_without_its_value(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[server]\nport = 9000\n")
    with pytest.raises(ConfigError, match=r"^environment variable GATEWAY_SERVER_PORT: setting server\.port"):
        load_config(f, env={"GATEWAY_SERVER_PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"^environment variable GATEWAY_WS_AUTH_TIMEOUT: settings ws\.\*"):
        load_config(f, env={"GATEWAY_WS_AUTH_TIMEOUT": "-1"})
    with pytest.raises(ConfigError) as info:
        load_config(f, env={"GATEWAY_SERVER_TOKEN": "short-secret"})
    assert "GATEWAY_SERVER_TOKEN" in str(info.value) and "short-secret" not in str(info.value)
    f.write_text('[server]\nport = "x"\n')  # the file's own mistake is still the file's
    with pytest.raises(ConfigError, match=f"^{f}: setting server.port"):
        load_config(f, env={"GATEWAY_CORS_ENABLED": "true"})
