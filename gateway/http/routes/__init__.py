"""HTTP route modules; each registers its endpoints with `gateway.http.api.endpoint` when imported.

An idle gateway imports none of them: the app holds one lazy group per module (`gateway.http.asgi.RouteGroup`),
which imports its module on the first request under one of the module's path prefixes listed here.
"""

# Each route module and the path prefixes every one of its endpoints starts with (no path parameter in a
# prefix). The order is the order the modules register their endpoints when all are imported (a module imports
# those it builds on first), so that a request meets the routes in the same order either way.
# tests/gateway/http/test_lazy_routes.py checks both against the registered endpoints.
MODULES: dict[str, tuple[str, ...]] = {
    "account": ("/api/auth/login", "/api/auth/me", "/api/auth/refresh", "/api/auth/register"),
    "app_config": ("/api/app-config/agent", "/api/app-config/llm", "/api/models-json"),
    "sessions": ("/api/chat/", "/api/sessions"),
    "api_files": ("/api/files",),
    "api_status": ("/api/logs", "/api/models", "/api/providers", "/api/status"),
    "connectors": ("/v1/connectors/", "/v1/runtime/", "/v1/sessions/"),
    "messages": ("/api/agent", "/api/message"),
    "cron": ("/api/cron",),
    "files": ("/files", "/upload"),
    "media": ("/api/agents/", "/api/transcribe"),
    "notifications": ("/api/notifications",),
    "openai_compat": ("/v1/chat/",),
    "owner_link": ("/api/auth/owner-link",),
    "sessions_seed": ("/api/sessions/",),
    "tool_servers": ("/api/app-config/a2a-servers", "/api/app-config/mcp-servers"),
    "skills": ("/api/app-config/skills", "/api/v2/skills"),
    "usage": ("/api/admin/usage-caps", "/api/admin/users/", "/api/usage"),
    "user_tools": ("/api/user/tools/",),
    "users": ("/api/admin/invites", "/api/admin/users"),
}


def load(name: str) -> str:
    """Import the route module `name` (registering its endpoints); its full module name."""
    import importlib

    module = f"{__name__}.{name}"
    importlib.import_module(module)
    return module


def register() -> None:
    """Import every route module, so that each registers its endpoints (`/openapi.json`, the CORS methods)."""
    for name in MODULES:
        load(name)
