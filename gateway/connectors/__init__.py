"""Connector edges: the per-kind settings model and the Telegram, Slack, HTTP and external protocol adapters.

May import: gateway.errors, gateway.logs, gateway.outbound, gateway.http.ratelimit (ingress rate limits), actors/
and storage/. Never gateway.core or the runtime: runtime.py starts the `ConnectorService` and the connector routes
in gateway.http.routes reach it through `runtime.connectors`.
"""
