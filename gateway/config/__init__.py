"""The gateway's configuration: the frozen `Config` tree from TOML and `GATEWAY_*` overrides, and the seeds' tables.

file.py loads and validates it (and derives `Paths` and the token); seeds.py folds the seeds' own tables into it;
networks.py parses addresses and CIDR ranges without trio.

May import: gateway.errors, and gateway.connectors.service (inside a function, to validate
`[connectors]`). Never gateway.core, the runtime or an edge, nor actors/ or storage/.
"""
