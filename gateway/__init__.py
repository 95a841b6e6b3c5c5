"""The gateway's edges: CLI, config, the ASGI app and its routes, crypto and connector adapters."""

__version__ = "0.1.0"
