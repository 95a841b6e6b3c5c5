"""`/ws`, the end-to-end encrypted WebSocket: the per-socket connection actor (connection.py), the v1/v2 auth phase
and its frame transport (handshake.py), the NaCl crypto (crypto.py, pure and sync), the server's identity key,
`<file:…>` tags, and the other end: the Python client (client.py) and `gateway chat` (chat.py).

May import: gateway.core (the running gateway), gateway.config, gateway.logs, gateway.types, gateway.errors, the
HTTP edge's building blocks it shares (gateway.http.credentials, gateway.http.ratelimit, gateway.http.jsondepth),
actors/ and storage/. Only gateway.http.asgi (which mounts `/ws`) and the CLI import it.
"""
