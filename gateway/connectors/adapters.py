"""The protocol adapter class for each connector kind."""

from __future__ import annotations

from collections.abc import Callable

from actors.connector import Connector
from gateway.connectors.base import Context
from gateway.connectors.external import ExternalConnector
from gateway.connectors.http import HttpConnector
from gateway.connectors.slack import SlackConnector
from gateway.connectors.telegram import TelegramConnector

ADAPTERS: dict[str, Callable[[Context], Connector]] = {
    "external": ExternalConnector,
    "http": HttpConnector,
    "slack": SlackConnector,
    "telegram": TelegramConnector,
}
