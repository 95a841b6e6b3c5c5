"""The HTTP edge on the gateway's one port: the ASGI app, the endpoint registry and every REST route.

asgi.py (the app and its middleware), api.py (the `endpoint` registry and `Ctx`), responses.py (JSON and the error
shape), openapi.py, sse.py, principal.py (who is calling) and credentials.py (passwords, JWTs), ratelimit.py,
jsondepth.py, connguard.py, wsdeflate.py (WebSocket compression for large messages only), forwarded.py (the client
address behind trusted proxies), webui.py, turns.py and session_feed.py (what the REST edges share of sessions),
and routes/ (one module per feature, registering its endpoints).

May import: gateway.core, gateway.agent, gateway.connectors, gateway.errors, gateway.logs, gateway.types,
gateway.outbound, gateway.fileio, actors/ and storage/, and gateway.ws (asgi.py only, to mount `/ws`). Never
gateway.runtime nor gateway.features: routes get the running gateway from the request (`runtime_of`, `Ctx.runtime`).
"""
