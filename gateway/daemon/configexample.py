"""`gateway config --example`: every setting of the `Config` tree with its default and a one-line comment, as TOML.

The settings and defaults come from the tree itself (gateway/config/file.py), so a new setting shows up at once;
its comment is written here (tests/gateway/daemon/test_config_example.py fails on a setting without one). The
output parses back to the defaults: settings whose default TOML cannot write (unset numbers) are commented out.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from gateway.config.file import Config

COMMENTS: dict[str, str] = {
    "server.host": "address to bind; beyond loopback a warning is printed unless allow_public",
    "server.port": "one port for everything: HTTP, /ws, connector ingress",
    "server.token": "the admin token; empty: <data_dir>/token, generated on first start (16+ characters)",
    "server.chat_id": "default chat for /ws clients that send none",
    "server.allow_public": "silence the warning about binding beyond loopback",
    "server.graceful_timeout": "seconds to drain connections at shutdown",
    "server.file_access": "roots for GET /files: all, home or workspace",
    "server.workspace": "the workspace folder; empty: <data_dir>/workspace",
    "server.max_body_bytes": "body limit of every request (uploads have their own)",
    "server.body_timeout": "seconds a request body may pause between two chunks before a 408",
    "server.trusted_proxies": 'reverse proxies whose X-Forwarded-For names the client, e.g. ["127.0.0.1"]',
    "api.enabled": "false turns off the E2E API: /ws, GET /files, POST /upload",
    "storage.data_dir": "where gateway.db, secrets.key, token and logs/ live; empty: $XDG_DATA_HOME/gateway",
    "storage.synchronous": "full: a write survives power loss; normal: survives a crash only (less SD wear)",
    "storage.max_batch": "most requests committed in one transaction",
    "storage.min_free_disk_mb": "less free space than this puts the disk service in error",
    "storage.timeout": "seconds a request may wait for storage before a 503",
    "storage.probe_interval": "seconds between two checks of a failing disk",
    "sessions.idle_timeout": "seconds before an idle session hibernates to storage",
    "sessions.subscribed_idle_timeout": "seconds before an idle session a client listens to is parked",
    "sessions.max_queue": "turns that may wait behind the running one",
    "sessions.history_limit": "messages given to the provider as context",
    "agent.provider": "echo, openai or cli",
    "agent.model": "with provider openai: the model, instead of providers.openai.model",
    "providers.echo.delay_ms": "pause between echoed words",
    "providers.openai.base_url": "any OpenAI-compatible endpoint (Ollama: http://127.0.0.1:11434/v1)",
    "providers.openai.api_key": "secret: better GATEWAY_PROVIDERS_OPENAI_API_KEY in the environment",
    "providers.openai.model": "the default model",
    "providers.openai.models": "the models offered",
    "providers.openai.temperature": "passed through when set (unset: the endpoint's default)",
    "providers.openai.max_tokens": "passed through when set (unset: the endpoint's default)",
    "providers.openai.system_prompt": "the first system message",
    "providers.openai.context_tokens": "budget for system prompt, skills, history and prompt",
    "providers.openai.connect_timeout": "seconds to connect",
    "providers.openai.read_timeout": "seconds of silence allowed inside a stream",
    "providers.openai.max_retries": "retries with backoff before any text streamed",
    "providers.openai.max_iterations": "model-tool rounds in one turn",
    "providers.openai.stream_usage": "ask the endpoint for each stream's token usage (false: estimated)",
    "providers.cli.argv": 'the cli provider\'s command; an argument "{prompt}" is replaced by the prompt, else stdin',
    "providers.cli.workdir": "its working folder; empty: the workspace",
    "providers.cli.env": "extra environment variables for it",
    "providers.cli.grace": "seconds between SIGTERM and SIGKILL on abort",
    "log.level": "debug, info, warning or error",
    "log.format": "text or json (one object a line)",
    "log.file": "the rotating log file; empty: <data_dir>/logs/gateway.log",
    "log.max_bytes": "size at which the log file rotates",
    "log.backups": "rotated files kept",
    "log.access": "one info line per HTTP request",
    "cors.enabled": "CORS for browsers on other origins",
    "cors.origins": "the origins allowed",
    "cors.credentials": "allow credentials in cross-origin requests",
    "ws.auth_timeout": "seconds a /ws client has to authenticate",
    "ws.max_frame_bytes": "larger frames close the socket (1009)",
    "ws.messages_per_minute": "messages a minute per connection",
    "ws.max_decrypt_failures": "v1 frames that fail to open before the socket closes",
    "ws.ping_interval": "seconds between WebSocket pings (0: none)",
    "ws.max_connections": "open /ws sockets at once",
    "files.max_upload_bytes": "POST /upload limit",
    "outbox.max_attempts": "connector reply deliveries tried before dead-lettering",
    "outbox.backoff": "seconds before the first retry, doubled per failure",
    "outbox.max_backoff": "longest wait between two retries",
    "outbox.timeout": "seconds per delivery attempt",
    "connectors": "connectors defined in this file, [connectors.<kind>.<name>]: see docs/connectors.md",
    "auth.registration": "who may make an account: closed (the owner), open (anyone) or invite",
    "auth.invite_ttl": "seconds an invite code lasts",
    "auth.access_ttl": "seconds a JWT access token lives",
    "auth.refresh_ttl": "seconds a refresh token lives",
    "auth.hash_concurrency": "argon2id password hashes at once (~19 MiB each)",
    "limits.enabled": "per-user token buckets: 429 with Retry-After",
    "limits.auth_per_minute": "login, register, refresh",
    "limits.auth_burst": "burst of the above",
    "limits.chat_per_minute": "chat and message routes",
    "limits.chat_burst": "burst of the above",
    "limits.api_per_minute": "every other authenticated route",
    "limits.api_burst": "burst of the above",
    "limits.upload_per_minute": "POST /api/files",
    "limits.upload_burst": "burst of the above",
    "limits.max_streams": "concurrent SSE streams per user",
    "limits.max_upload_bytes": "POST /api/files size limit",
    "limits.failed_auth_free": "failed authentications per address before waits start",
    "limits.failed_auth_max_delay": "longest wait (seconds) after failed authentications",
    "transcribe.http_url": "a Whisper-compatible API tried first, e.g. http://127.0.0.1:8080/v1",
    "transcribe.http_api_key": "secret: its key",
    "transcribe.http_model": "its model",
    "transcribe.whisper_command": "openai-whisper's CLI, used when on PATH (empty: never)",
    "transcribe.whisper_model": "its model",
    "transcribe.whisper_cpp_command": "whisper.cpp, used when on PATH and a model file is set",
    "transcribe.whisper_cpp_model": "its model file",
    "transcribe.timeout": "seconds per backend",
    "outbound.allow": 'private destinations outbound requests may reach, e.g. ["10.0.0.0/8", "ollama.lan"]',
    "usage.daily_token_cap": "tokens (in and out) an account may use per UTC day (unset: no cap)",
    "usage.unowned_daily_token_cap": "the same for the turns of no account: the gateway token's, connectors', cron's",
}

# Shown, commented out, for a setting whose default is "unset" (TOML has no null).
_UNSET_EXAMPLES: dict[str, Any] = {
    "providers.openai.temperature": 0.7,
    "providers.openai.max_tokens": 1024,
    "usage.daily_token_cap": 200_000,
    "usage.unowned_daily_token_cap": 1_000_000,
}


def settings(struct: type[msgspec.Struct] = Config, prefix: str = "") -> list[tuple[str, Any]]:
    """Every setting of the tree (dotted name, default), in the order the structs declare them."""
    out: list[tuple[str, Any]] = []
    defaults = struct()
    for name in struct.__struct_fields__:
        value = getattr(defaults, name)
        if isinstance(value, msgspec.Struct):
            out += settings(type(value), f"{prefix}{name}.")
        else:
            out.append((prefix + name, value))
    return out


def toml_value(value: Any) -> str:
    """A TOML literal for a config value: strings, numbers, booleans, lists and tables of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be written in TOML")
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{value!r} cannot be written in TOML")


def toml_key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "_-" for c in key) and key.isascii()
    return key if bare else msgspec.json.encode(key).decode()


def render() -> str:
    """The annotated example: a header, then one `[section]` per struct, each setting with its comment."""
    lines = [
        "# gateway configuration: every setting with its default (`gateway config --example`).",
        "# Save it as ~/.config/gateway/config.toml (or pass --config PATH), delete what you leave at its default,",
        "# and change the rest. Any setting can also come from GATEWAY_<SECTION>_<KEY>; see docs/config.md.",
    ]
    section = None
    for name, default in settings():
        where, _, key = name.rpartition(".")
        comment = COMMENTS.get(name, "see docs/config.md")
        if not where:  # a top-level table of tables: connectors
            lines += ["", f"# {comment}", f"# [{key}.telegram.mybot]", '#   token = {value = "..."}']
            section = None
            continue
        if where != section:
            lines += ["", f"[{where}]"]
            section = where
        lines.append(f"# {comment}")
        if default is None:
            lines.append(f"# {key} = {toml_value(_UNSET_EXAMPLES.get(name, 0))}")
        else:
            lines.append(f"{key} = {toml_value(default)}")
    return "\n".join(lines) + "\n"
