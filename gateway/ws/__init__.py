"""`/ws`, the end-to-end encrypted WebSocket, and its clients.

connection.py (one actor per socket), handshake.py (the v1/v2 auth phase and its frame transport), crypto.py (NaCl,
pure and sync), identity.py (the server's key), filetags.py (`<file:…>` tags), client.py (the Python client) and
chat.py (`gateway chat`).

May import: gateway.core, gateway.config, gateway.logs, gateway.types, gateway.errors, the HTTP edge's building
blocks it shares (gateway.http.credentials, gateway.http.ratelimit, gateway.http.jsondepth), gateway.daemon's lock
and control (chat.py finds a running gateway), actors/ and storage/. Only gateway.http.asgi (which mounts `/ws`)
and gateway.daemon (the CLI) import it.
"""
