"""The connector records themselves: what a kind derives from its settings, and what a config's repr leaves out."""

from __future__ import annotations

from gateway.connectors.base import ConnectorKind
from gateway.connectors.http import KIND as HTTP
from gateway.connectors.http import HttpSettings
from gateway.connectors.model import ConnectorConfig


def test_a_kind_lists_its_secret_fields_from_its_settings_whatever_it_is_given() -> None:
    assert HTTP.secret_fields == ("bearer_token",)
    # The field is derived: a value passed in is replaced by what the settings say.
    kind = ConnectorKind(
        name="x", settings=HttpSettings, adapter=HTTP.adapter, check_address=HTTP.check_address, secret_fields=("y",)
    )
    assert kind.secret_fields == HTTP.secret_fields


def test_a_config_repr_never_shows_the_file_secrets() -> None:
    settings = HttpSettings(bearer_token=None)
    config = ConnectorConfig("http", "web", "file", settings, {"bearer_token": "canary-9f3e1d"})
    shown = repr(config)
    assert "canary-9f3e1d" not in shown and "file_secrets" not in shown
    assert "kind='http'" in shown and "name='web'" in shown and "HttpSettings(" in shown
    assert config.file_secrets == {"bearer_token": "canary-9f3e1d"}
