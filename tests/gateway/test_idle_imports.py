"""What a default `gateway serve` loads: the optional heavy libraries stay out until a feature needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.gateway.harness import START_TIMEOUT, Site, free_port

TOKEN = "idle-imports-token-0123456789"

# Runs `python -m gateway serve` in this process (runpy, as `-m` does) with a watcher thread that waits for
# `/health` and `/api/status` to answer 200, prints every loaded module's name and stops the gateway with
# SIGTERM. The watcher speaks HTTP over a bare socket so that it loads no HTTP library itself.
PROBE = """
import json, os, runpy, signal, socket, sys, threading, time

PORT, TOKEN = int(os.environ["PROBE_PORT"]), os.environ["PROBE_TOKEN"]


def get(path):
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Bearer {TOKEN}\\r\\n"
                  "Connection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b" ", 2)[1]


def watch():
    deadline, served = time.monotonic() + float(os.environ["PROBE_TIMEOUT"]), False
    while not served and time.monotonic() < deadline:
        try:
            served = get("/health") == b"200" and get("/api/status") == b"200"
        except OSError:
            time.sleep(0.05)
    print("MODULES " + json.dumps(sorted(sys.modules) if served else None), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=watch, daemon=True).start()
sys.argv = ["gateway", *sys.argv[1:]]
runpy.run_module("gateway", run_name="__main__", alter_sys=True)
"""

# Each costs milliseconds to import and MiBs resident, and only some features need it: the MCP SDK (with
# pydantic) for an MCP server, sqlite-utils for a pending migration, PyYAML for installing a skill, croniter for
# a cron job, PyJWT (with cryptography) for user logins, httpx for outbound calls (providers, connectors).
OPTIONAL = ["mcp", "pydantic", "pydantic_core", "sqlite_utils", "yaml", "croniter", "jwt", "cryptography", "httpx"]

# The gateway's own modules an idle gateway leaves out: every REST feature (imported by the first request under
# its paths: `/api/status` loads its own, which shows the probe sees a late import), the OpenAPI documents, and
# the commands whose arguments `serve` does not parse.
ROUTES = [
    "account", "api_files", "app_config", "connectors", "cron", "files", "media", "messages", "notifications",
    "openai_compat", "owner_link", "sessions", "sessions_seed", "skills", "tool_servers", "usage", "user_tools",
    "users",
]  # fmt: skip
LAZY_OWN = [
    *(f"gateway.http.routes.{name}" for name in ROUTES),
    "gateway.http.openapi",
    "gateway.daemon.useradmin",
    "gateway.daemon.dashboard",
    "gateway.daemon.onboard",
    "gateway.daemon.completion",
]


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def serve_and_list_modules(site: Site, port: int) -> set[str]:
    """Start the gateway as `python -m gateway serve` would, once it serves, return its modules' names."""
    env = {**site.env, "PROBE_PORT": str(port), "PROBE_TOKEN": TOKEN, "PROBE_TIMEOUT": str(START_TIMEOUT)}
    argv = [sys.executable, "-c", PROBE, "serve", "--config", str(site.config_file)]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=START_TIMEOUT + 30)
    lines = [line for line in r.stdout.splitlines() if line.startswith("MODULES ")]
    assert r.returncode == 0 and lines, r.stdout + r.stderr
    modules = json.loads(lines[-1].removeprefix("MODULES "))
    assert modules is not None, "the gateway did not serve /health and /api/status in time:\n" + r.stderr
    return {str(name) for name in modules}


def write_config(site: Site, port: int, extra: str = "") -> None:
    site.config_file.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{TOKEN}"\ngraceful_timeout = 2.0\n\n'
        f'[storage]\ndata_dir = "{site.root / "data"}"\n' + extra
    )


def test_a_default_gateway_serves_without_the_optional_libraries(tmp_path: Path) -> None:
    port = free_port()
    site = Site(tmp_path, port=port)
    write_config(site, port)
    # The first start creates the database: its migrations are pending, so sqlite-utils runs them, and is
    # forgotten once they are applied.
    first = serve_and_list_modules(site, port)
    assert "gateway.http.routes.api_status" in first  # loaded by the probe's /api/status, after start-up
    assert sorted(top_level(first) & set(OPTIONAL)) == []
    assert sorted(first & set(LAZY_OWN)) == []
    # Every later start finds them applied with plain sqlite3 and loads none of the optional libraries.
    again = serve_and_list_modules(site, port)
    assert {"gateway", "actors", "storage", "trio", "hypercorn", "starlette"} <= top_level(again)
    assert sorted(top_level(again) & set(OPTIONAL)) == []
    assert sorted(again & set(LAZY_OWN)) == []


def test_a_gateway_whose_agent_is_openai_loads_httpx_at_start_only(tmp_path: Path) -> None:
    port = free_port()
    site = Site(tmp_path, port=port)
    # Its first turn needs httpx: loading it at start keeps that turn as fast as the next ones.
    write_config(site, port, '[agent]\nprovider = "openai"\n[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n')
    serve_and_list_modules(site, port)  # the first start migrates
    modules = serve_and_list_modules(site, port)
    assert sorted(top_level(modules) & set(OPTIONAL)) == ["httpx"]
