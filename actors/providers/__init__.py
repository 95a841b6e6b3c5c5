"""Providers: the agent behind a session (built in: echo; more register themselves by name)."""
