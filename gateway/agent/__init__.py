"""What the agent is given beyond its provider: settings changed over the API, tool preferences, skills, A2A, speech.

live_config.py (the LLM endpoint, agent limits, models.json), tool_prefs.py (users' MCP and A2A switch-offs),
skills.py, a2a.py (agent cards; the agents as the model's tools) and transcribe.py (speech to text).

May import: gateway.core, gateway.errors, gateway.logs, gateway.outbound, actors/ and storage/. Never an edge: the
routes in gateway.http.routes call into it.
"""
