"""The gateway: the edges (HTTP and `/ws` on one port, the CLI, connectors) over the actors/ runtime.

Packages: `http/` (the ASGI app and every REST route), `ws/` (`/ws`, its crypto and clients), `daemon/` (the `gateway`
command and the process around a running gateway), `agent/` (live agent settings, tool preferences, skills, A2A,
transcription), `connectors/` (Telegram, Slack, HTTP and external connectors), `config/` (the `Config` tree). Loose
modules, one concern each: `core` (`Runtime`, `Services`), `runtime` (startup order), `features`, `notify`,
`errors`, `types`, `logs`, `outbound`, `fileio`.

Imports point one way, gateway -> actors -> storage, and form no cycle inside gateway/ (tests/test_layout.py).
"""

__version__ = "0.1.0"
