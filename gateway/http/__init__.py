"""The HTTP edge on the gateway's one port: the ASGI app (asgi.py), the endpoint registry and its request context
(api.py), OpenAPI and `/docs`, server-sent events, who is calling (principal.py) and the credentials behind it
(credentials.py), rate limits, JSON nesting bounds, the web UI's files, the turn-following the REST edges share
(turns.py), and every REST route (routes/).
"""
