"""Route modules imported on first use: the prefix table covers every endpoint, and the lazy app routes alike."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from starlette.routing import BaseRoute, Match, Route

from gateway.http import api
from gateway.http import routes as rest
from gateway.http.asgi import RouteGroup, all_routes

ROOT = Path(__file__).resolve().parents[3]


def test_every_endpoint_is_under_a_prefix_of_its_module() -> None:
    rest.register()
    for name, prefixes in rest.MODULES.items():
        assert prefixes and all(p.startswith("/") and "{" not in p for p in prefixes), name
    for ep in api.ENDPOINTS:
        package, _, name = ep.handler.__module__.rpartition(".")
        assert package == rest.__name__ and name in rest.MODULES, f"{ep.method} {ep.path} from {package}.{name}"
        assert ep.path.startswith(rest.MODULES[name]), f"{ep.method} {ep.path}: not under {rest.MODULES[name]}"


def test_the_table_lists_the_modules_in_the_order_they_register() -> None:
    # In a new process: the order an eager import gives, whatever this test session imported before.
    probe = (
        "import json\n"
        "from gateway.http import api, routes\n"
        "routes.register()\n"
        "seen = []\n"
        "for ep in api.ENDPOINTS:\n"
        "    name = ep.handler.__module__.rpartition('.')[2]\n"
        "    if name not in seen:\n"
        "        seen.append(name)\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == list(rest.MODULES)


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def _match(routes: list[BaseRoute], method: str, path: str) -> tuple[Match, str | None]:
    """What Starlette's router picks for `method path`: the first full match, else the first partial one."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    partial: tuple[Match, str | None] | None = None
    for route in routes:
        match, child = route.matches(scope)
        chosen = child.get("gateway.route", route)
        found = (match, chosen.path if isinstance(chosen, Route) else None)
        if match is Match.FULL:
            return found
        if match is Match.PARTIAL and partial is None:
            partial = found
    return partial or (Match.NONE, None)


def test_the_lazy_routes_match_every_request_as_the_imported_ones() -> None:
    eager = all_routes()
    lazy = all_routes(lazy=True)
    groups = [r for r in lazy if isinstance(r, RouteGroup)]
    assert len(groups) == len(rest.MODULES) + 1  # and the OpenAPI documents
    probes = {(ep.method, _fill(ep.path)) for ep in api.ENDPOINTS}
    probes |= {("DELETE", _fill(ep.path)) for ep in api.ENDPOINTS}  # mostly 405s: the partial matches
    probes |= {("GET", p) for p in ("/openapi.json", "/docs", "/docs/x.js", "/api/nope", "/api/sessions/x1/nope")}
    for method, path in sorted(probes):
        assert _match(lazy, method, path) == _match(eager, method, path), (method, path)


def test_a_group_imports_its_module_only_when_a_request_may_be_for_it() -> None:
    # In a new process, so that no other test has imported the route modules.
    probe = (
        "import sys\n"
        "from gateway.http.asgi import all_routes\n"
        "routes = all_routes(lazy=True)\n"
        "def hit(path):\n"
        "    for r in routes:\n"
        "        r.matches({'type': 'http', 'method': 'GET', 'path': path, 'root_path': '', 'headers': []})\n"
        "loaded = lambda: sorted(m.rpartition('.')[2] for m in sys.modules if m.startswith('gateway.http.routes.'))\n"
        "print(loaded())\n"
        "hit('/health'); hit('/assets/app.js'); hit('/api/nope')\n"
        "print(loaded())\n"
        "hit('/api/status')\n"
        "print(loaded())\n"
        "hit('/api/cron/x1')\n"
        "print(loaded(), 'gateway.http.openapi' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[:3] == ["[]", "[]", "['api_status']"]
    # cron builds on account, messages and sessions (and those on theirs): imported, not yet matched against.
    assert "'cron'" in lines[3] and "'users'" not in lines[3] and lines[3].endswith("False")
