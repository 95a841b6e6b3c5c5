"""What a default `gateway serve` loads: the optional heavy libraries stay out until a feature needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from tests.gateway.harness import START_TIMEOUT, Site, free_port

TOKEN = "idle-imports-token-0123456789"

# Runs `python -m gateway serve` in this process (runpy, as `-m` does) with a watcher thread that waits for
# `/health` to answer 200, opens a WebSocket on `/ws` (the handshake's 101), prints every loaded module's name
# (IDLE), asks `/api/status` eight times at once (each 200: what a monitor and `gateway status` ask), prints how
# many Starlette apps exist and the modules (STATUS), then asks `/api/providers` eight times at once (each 200),
# prints the Starlette apps (APPS) and the modules again (MODULES) and stops the gateway with SIGTERM. The watcher
# speaks HTTP over a bare socket so that it loads no HTTP library itself.
PROBE = """
import gc, json, os, runpy, signal, socket, sys, threading, time

PORT, TOKEN = int(os.environ["PROBE_PORT"]), os.environ["PROBE_TOKEN"]


def get(path, headers=f"Authorization: Bearer {TOKEN}\\r\\nConnection: close\\r\\n"):
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n{headers}\\r\\n".encode())
        data = b""
        # Until the server closes, or for a WebSocket (which stays open) until its handshake's answer is in.
        while not (data.startswith(b"HTTP/1.1 101 ") and b"\\r\\n\\r\\n" in data) and (chunk := s.recv(65536)):
            data += chunk
    return data.split(b" ", 2)[1]


WS = ("Upgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Version: 13\\r\\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n")


def watch():
    deadline, served = time.monotonic() + float(os.environ["PROBE_TIMEOUT"]), False
    while not served and time.monotonic() < deadline:
        try:
            served = get("/health") == b"200"
        except OSError:
            time.sleep(0.05)
    idle = served and get("/ws", WS) == b"101" and sorted(sys.modules)
    print("IDLE " + json.dumps(idle or None), flush=True)
    served = idle and at_once("/api/status")
    print("STATUS " + json.dumps([apps(), sorted(sys.modules)] if served else None), flush=True)
    # The first REST requests the app serves, several at once: they build one Starlette app between them.
    served = served and at_once("/api/providers")
    print("APPS " + json.dumps(apps()), flush=True)
    print("MODULES " + json.dumps(sorted(sys.modules) if served else None), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def at_once(path):
    answers = []
    asks = [threading.Thread(target=lambda: answers.append(get(path))) for _ in range(8)]
    for ask in asks:
        ask.start()
    for ask in asks:
        ask.join()
    return answers == [b"200"] * 8


def apps():
    return sum(type(o).__name__ == "Starlette" for o in gc.get_objects())


threading.Thread(target=watch, daemon=True).start()
sys.argv = ["gateway", *sys.argv[1:]]
runpy.run_module("gateway", run_name="__main__", alter_sys=True)
"""

# Each costs milliseconds to import and MiBs resident, and only some features need it: the MCP SDK (with
# pydantic) for an MCP server, PyYAML for installing a skill, croniter for a cron job, PyJWT (with cryptography)
# for user logins, httpx for outbound calls (providers, connectors); sqlite-utils, which the migrations no longer
# use, must not come back.
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
# What the Starlette app is made of, and the standard library it brings (`asyncio` through `starlette._utils`,
# `email` through `starlette.exceptions`, the multipart parser through `starlette.formparsers`): only the first
# request other than `/health`, `/ws` and `GET /api/status` builds it.
STARLETTE_APP = ["starlette.applications", "starlette.routing", "starlette.requests", "asyncio", "email"]
# All that `/api/status` adds to an idle gateway: the report, the caller's authentication, the users' queries.
STATUS_OWN = ["gateway.http.status", "gateway.http.principal", "storage.users"]
# Standard-library modules only a feature needs: zoneinfo (with sysconfig) for a cron job's timezone.
LAZY_STDLIB = ["zoneinfo", "sysconfig"]


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


class Loaded(NamedTuple):
    """The modules a gateway had loaded at each step of the probe."""

    idle: set[str]  # once it served `/health` and `/ws`
    status: set[str]  # and `/api/status` (answered ahead of the Starlette app, which is not built)
    served: set[str]  # and the first requests the Starlette app serves


def serve_and_list_modules(site: Site, port: int) -> Loaded:
    """Start the gateway as `python -m gateway serve` would; its modules' names once it has served `/health` and
    `/ws` (idle), once it has served `/api/status` too, then once it has served requests of the Starlette app."""
    env = {**site.env, "PROBE_PORT": str(port), "PROBE_TOKEN": TOKEN, "PROBE_TIMEOUT": str(START_TIMEOUT)}
    argv = [sys.executable, "-c", PROBE, "serve", "--config", str(site.config_file)]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=START_TIMEOUT + 30)
    found = {}
    for label in ("IDLE", "STATUS", "MODULES"):
        lines = [line for line in r.stdout.splitlines() if line.startswith(label + " ")]
        assert r.returncode == 0 and lines, r.stdout + r.stderr
        found[label] = json.loads(lines[-1].removeprefix(label + " "))
        assert found[label] is not None, f"the gateway did not serve {label} in time:\n{r.stderr}"
    apps_before, status = found["STATUS"]
    assert apps_before == 0, "/api/status is answered without building the Starlette app"
    apps = [line for line in r.stdout.splitlines() if line.startswith("APPS ")]
    assert apps == ["APPS 1"], "concurrent first REST requests must build one app: " + r.stdout[-300:]
    return Loaded(
        {str(name) for name in found["IDLE"]}, {str(name) for name in status}, {str(name) for name in found["MODULES"]}
    )


def write_config(site: Site, port: int, extra: str = "") -> None:
    site.config_file.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{TOKEN}"\ngraceful_timeout = 2.0\n\n'
        f'[storage]\ndata_dir = "{site.root / "data"}"\n' + extra
    )


def test_a_default_gateway_serves_without_the_optional_libraries(tmp_path: Path) -> None:
    port = free_port()
    site = Site(tmp_path, port=port)
    write_config(site, port)
    # The first start creates the database: every migration runs, as plain SQL, and leaves nothing loaded that a
    # later start does not load.
    first = serve_and_list_modules(site, port)
    assert "gateway.http.routes.api_status" in first.served  # loaded by the probe's /api/providers, after start-up
    assert sorted(top_level(first.served) & set(OPTIONAL)) == []
    assert sorted(first.served & set(LAZY_OWN)) == []
    assert sorted(first.served & set(LAZY_STDLIB)) == []
    # Serving /health, /ws and /api/status needs nothing of Starlette (nor what its app brings): the first other
    # REST request builds the Starlette app.
    for loaded in (first.idle, first.status):
        assert "starlette" not in top_level(loaded)
        assert sorted(loaded & set(STARLETTE_APP)) == []
    assert sorted(first.status - first.idle - set(STATUS_OWN)) == []
    assert "gateway.http.routes.api_status" not in first.status
    assert set(STARLETTE_APP) <= first.served
    # Every later start finds them applied with plain sqlite3 and loads none of the optional libraries.
    again = serve_and_list_modules(site, port)
    assert {"gateway", "actors", "storage", "trio", "hypercorn", "starlette"} <= top_level(again.served)
    assert sorted(top_level(again.served) & set(OPTIONAL)) == []
    assert sorted(again.served & set(LAZY_OWN)) == []
    assert sorted(first.served - again.served) == []
    assert sorted(first.idle ^ again.idle) == []
    assert sorted(first.status ^ again.status) == []
    assert "starlette" not in top_level(again.status)


def test_a_gateway_whose_agent_is_openai_loads_httpx_at_start_only(tmp_path: Path) -> None:
    port = free_port()
    site = Site(tmp_path, port=port)
    # Its first turn needs httpx: loading it at start keeps that turn as fast as the next ones.
    write_config(site, port, '[agent]\nprovider = "openai"\n[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n')
    serve_and_list_modules(site, port)  # the first start migrates
    modules = serve_and_list_modules(site, port).served
    assert sorted(top_level(modules) & set(OPTIONAL)) == ["httpx"]
