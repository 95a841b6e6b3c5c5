"""What the agent is given beyond its provider: its live settings changed over the API (live_config.py: the LLM
endpoint, agent limits, models.json, users' MCP switch-offs), skills (skills.py), A2A agent cards (a2a.py) and
speech to text (transcribe.py).

May import: gateway.core, gateway.errors, gateway.logs, gateway.outbound, actors/ and storage/. Never the HTTP or
/ws edges: the routes in gateway.http.routes call into it.
"""
