"""Connector edges: the per-kind settings model and the Telegram, Slack, HTTP and external protocol adapters."""
