"""The gateway's configuration: the frozen `Config` tree read from TOML and `GATEWAY_*` overrides (file.py), and
the seeds' own tables folded into it (seeds.py).

May import: the standard library, msgspec, and (to validate `[outbound]` and `[connectors]`) gateway.errors,
gateway.outbound and gateway.connectors. Never the runtime, the HTTP or /ws edges, nor actors/ or storage/.
"""
