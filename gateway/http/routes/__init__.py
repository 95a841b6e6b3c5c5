"""HTTP route modules; each registers its endpoints with `gateway.http.api.endpoint` when imported."""


def register() -> None:
    """Import every route module, so that each registers its endpoints; the app and `/openapi.json` call it."""
    from gateway.http.routes import (  # noqa: F401
        account,
        api_files,
        api_status,
        app_config,
        connectors,
        cron,
        files,
        media,
        messages,
        notifications,
        openai_compat,
        owner_link,
        sessions,
        sessions_seed,
        skills,
        tool_servers,
        usage,
        user_tools,
        users,
    )
