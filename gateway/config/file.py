"""Configuration: a frozen, validated tree loaded from TOML, then `GATEWAY_<SECTION>_<KEY>` env overrides."""

from __future__ import annotations

import os
import re
import secrets
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from gateway.config.networks import parse_networks
from gateway.config.seeds import SeedConfigError, fold_seed_tables

ENV_PREFIX = "GATEWAY_"
# Tokens people paste from examples; a gateway never runs with one of these.
_PLACEHOLDER_TOKENS = {"changeme", "change-me", "your-secret-token", "secret", "token", "password", "test"}
MIN_TOKEN_LENGTH = 16


class ConfigError(Exception):
    """The configuration is invalid; the message names the setting and says what to do."""


class Server(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8741
    token: str = ""  # empty: use (or generate) the token file in the data folder
    chat_id: int = 1  # default chat for /ws clients that send none
    allow_public: bool = False  # binding beyond loopback without this prints a warning
    graceful_timeout: float = 5.0
    file_access: Literal["all", "home", "workspace"] = "workspace"
    workspace: str = ""  # empty: <data_dir>/workspace
    max_body_bytes: int = 2 * 1024 * 1024
    body_timeout: float = 30.0  # seconds a request body may pause between two chunks (slowloris) before a 408
    # Reverse proxies whose X-Forwarded-For names the client (gateway/http/forwarded.py); none: the peer is the client.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)


class Api(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # The E2E API seed's `[api]` table; its other keys name `[server]` settings (gateway/config/seeds.py).
    enabled: bool = True  # false: no `/ws`, `GET /files`, `POST /upload` (the seed's default is off; ours is on)


class Storage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    data_dir: str = ""  # empty: $XDG_DATA_HOME/gateway
    synchronous: Literal["full", "normal"] = "full"
    max_batch: int = 512
    # Below this much free space in data_dir, `/api/status` reports the disk in error (503).
    min_free_disk_mb: int = 50
    # Seconds a request may wait for storage to start it; then it is withdrawn (never runs) and answered 503.
    # A commit stuck this long (a frozen disk) makes /health degraded and new requests are refused at once.
    timeout: float = 30.0
    # Seconds between two checks, while writes fail, of whether the disk takes writes again.
    probe_interval: float = 5.0


class Sessions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    idle_timeout: float = 300.0
    subscribed_idle_timeout: float = 0.25
    max_queue: int = 32
    history_limit: int = 50


class EchoProviderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    delay_ms: float = 0.0


class OpenAIProviderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    base_url: str = "https://api.openai.com/v1"  # Ollama: http://127.0.0.1:11434/v1
    api_key: str = ""  # a secret: never shown, never logged
    model: str = "gpt-4o-mini"
    models: list[str] = msgspec.field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str = ""
    context_tokens: int = 8000
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_retries: int = 3
    max_iterations: int = 8
    stream_usage: bool = True  # ask for `stream_options.include_usage`; false for an endpoint that refuses it


class CliProviderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # The command to run per turn. An argument "{prompt}" is replaced by the prompt; without one the
    # prompt is written to the command's stdin.
    argv: list[str] = msgspec.field(default_factory=list)
    workdir: str = ""  # empty: the workspace
    env: dict[str, str] = msgspec.field(default_factory=dict)  # added to the gateway's environment
    grace: float = 2.0  # seconds between SIGTERM and SIGKILL on abort


class Providers(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    echo: EchoProviderConfig = EchoProviderConfig()
    openai: OpenAIProviderConfig = OpenAIProviderConfig()
    cli: CliProviderConfig = CliProviderConfig()


class WebSocketConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    auth_timeout: float = 10.0  # the v1 clients' timeout for the first frame
    max_frame_bytes: int = 1024 * 1024
    messages_per_minute: int = 120
    max_decrypt_failures: int = 3  # a connection that sends this many bad frames is closed
    ping_interval: float = 20.0  # WebSocket protocol pings (0: none)
    max_connections: int = 512  # open /ws sockets at once (each holds an actor and a descriptor); the next gets 1013


class Files(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_upload_bytes: int = 50 * 1024 * 1024


class Agent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    provider: str = "echo"
    model: str = ""


class Log(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file: str = ""  # empty: <data_dir>/logs/gateway.log
    max_bytes: int = 5 * 1024 * 1024
    backups: int = 3
    access: bool = True  # one `info` line per HTTP request (method, path without query, status, ms)


class Cors(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    origins: list[str] = msgspec.field(default_factory=list)
    credentials: bool = False


class Outbox(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_attempts: int = 8
    backoff: float = 1.0  # seconds before the first retry, doubled per failure
    max_backoff: float = 300.0
    timeout: float = 30.0


class Auth(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Who may make an account with POST /api/auth/register: nobody (the owner makes them: `gateway user add`),
    # anyone, or whoever holds an unused invite code. Registering never makes an admin.
    registration: Literal["closed", "open", "invite"] = "closed"
    invite_ttl: float = 7 * 86400.0  # seconds an invite code lasts
    access_ttl: float = 900.0  # seconds a JWT access token lives
    refresh_ttl: float = 30 * 86400.0  # seconds a refresh token lives (each use rotates it)
    hash_concurrency: int = 2  # argon2id hashes at once; each takes ~19 MiB, so a Pi stays within memory


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Token buckets per user (or per client address before login) and route group: N per minute, burst B."""

    enabled: bool = True
    auth_per_minute: float = 20.0
    auth_burst: int = 10
    chat_per_minute: float = 60.0
    chat_burst: int = 20
    api_per_minute: float = 600.0
    api_burst: int = 120
    upload_per_minute: float = 30.0
    upload_burst: int = 10
    max_streams: int = 4  # concurrent SSE streams per user
    max_upload_bytes: int = 20 * 1024 * 1024
    # Failed authentication (token, login, /ws) per client address: this many are free, then each doubles the wait.
    failed_auth_free: int = 5
    failed_auth_max_delay: float = 300.0


class Transcribe(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`POST /api/transcribe` tries, in order: a Whisper-compatible HTTP API, `whisper`, whisper.cpp."""

    http_url: str = ""  # e.g. http://127.0.0.1:8080/v1 (POSTs <http_url>/audio/transcriptions)
    http_api_key: str = ""  # a secret: never shown, never logged
    http_model: str = "whisper-1"
    whisper_command: str = "whisper"  # openai-whisper's CLI, used when found on PATH ("" to never use it)
    whisper_model: str = "base"
    whisper_cpp_command: str = "whisper-cli"  # used when found on PATH and whisper_cpp_model is set
    whisper_cpp_model: str = ""
    timeout: float = 300.0


class Outbound(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Requests made on someone's behalf reach only public addresses, except these (gateway/outbound.py)."""

    allow: list[str] = msgspec.field(default_factory=list)  # "ollama.lan", "*.lan:443", "10.0.0.0/8", "[::1]:8080"


class UsageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Daily token caps (tokens in and out per UTC day); absent: none. An admin sets an account's own over the API."""

    daily_token_cap: int | None = None  # every account without a cap of its own
    unowned_daily_token_cap: int | None = None  # turns of no account: the gateway token's, connectors', cron's


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    server: Server = Server()
    api: Api = Api()
    storage: Storage = Storage()
    sessions: Sessions = Sessions()
    agent: Agent = Agent()
    providers: Providers = Providers()
    log: Log = Log()
    cors: Cors = Cors()
    ws: WebSocketConfig = WebSocketConfig()
    files: Files = Files()
    outbox: Outbox = Outbox()
    # [connectors.<kind>.<name>]: validated by the kind's settings (connectors/registry.py); read-only over the API.
    connectors: dict[str, dict[str, dict[str, Any]]] = msgspec.field(default_factory=dict)
    auth: Auth = Auth()
    limits: Limits = Limits()
    transcribe: Transcribe = Transcribe()
    outbound: Outbound = Outbound()
    usage: UsageConfig = UsageConfig()


class Paths(msgspec.Struct, frozen=True):
    """Where this gateway's files live, derived from the config path and settings."""

    config_file: Path
    data_dir: Path
    db_file: Path
    # The key of the database's sealed secrets (storage/sealing.py): a backup needs it beside gateway.db.
    secrets_key_file: Path
    token_file: Path
    jwt_secret_file: Path
    files_dir: Path
    log_file: Path
    workspace: Path


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gateway" / "config.toml"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gateway"


def _env_overrides(env: dict[str, str]) -> dict[str, Any]:
    """Collect `GATEWAY_<SECTION>_[<SUB>_]<KEY>` variables for the known settings (converted later)."""

    def walk(stype: type[msgspec.Struct], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        defaults = stype()
        for fname in stype.__struct_fields__:
            default = getattr(defaults, fname)
            name = f"{prefix}_{fname}".upper()
            if isinstance(default, msgspec.Struct):
                sub = walk(type(default), name)
                if sub:
                    out[fname] = sub
            elif name in env and not isinstance(default, dict):  # maps are set in the file, not the environment
                raw = env[name]
                out[fname] = [o.strip() for o in raw.split(",") if o.strip()] if isinstance(default, list) else raw
        return out

    return walk(Config, ENV_PREFIX.rstrip("_"))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def parse_config(data: dict[str, Any], *, source: str = "config") -> Config:
    """Validate a config tree; raise ConfigError naming the bad setting."""
    try:
        data = fold_seed_tables(data)
    except SeedConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    data = _fold_legacy(data)
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(str(exc))}") from None
    _check(config, source)
    return config


def _fold_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Settings that were renamed: `auth.registration_open = true|false` is `auth.registration = "open"|"closed"`."""
    auth = data.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("registration_open"), bool):
        auth = dict(auth)
        auth.setdefault("registration", "open" if auth.pop("registration_open") else "closed")
        data = {**data, "auth": auth}
    return data


def _explain(message: str) -> str:
    # msgspec says "... - at `$.server.port`"; people write TOML, so name the setting as they would.
    if " - at `$." in message:
        what, where = message.split(" - at `$.", 1)
        return f"setting {where.rstrip('`')}: {what}"
    return message


def _check(config: Config, source: str) -> None:
    s = config.server
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"{source}: setting server.port: {s.port} is not a port number (0-65535)")
    if s.chat_id <= 0:
        raise ConfigError(f"{source}: setting server.chat_id must be a positive integer")
    if s.body_timeout <= 0:
        raise ConfigError(f"{source}: setting server.body_timeout must be > 0 seconds")
    if s.graceful_timeout < 0:
        raise ConfigError(f"{source}: setting server.graceful_timeout must be >= 0")
    if s.token:
        check_token(s.token, f"{source}: setting server.token")
    try:
        parse_networks(s.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"{source}: setting server.trusted_proxies: {exc}") from None
    if config.storage.min_free_disk_mb < 0:
        raise ConfigError(f"{source}: setting storage.min_free_disk_mb must be >= 0")
    if config.storage.timeout <= 0 or config.storage.probe_interval <= 0:
        raise ConfigError(f"{source}: settings storage.timeout and storage.probe_interval must be > 0 seconds")
    if config.sessions.idle_timeout <= 0:
        raise ConfigError(f"{source}: setting sessions.idle_timeout must be > 0 seconds")
    if config.sessions.subscribed_idle_timeout <= 0:
        raise ConfigError(f"{source}: setting sessions.subscribed_idle_timeout must be > 0 seconds")
    if config.sessions.max_queue < 1:
        raise ConfigError(f"{source}: setting sessions.max_queue must be >= 1")
    if config.agent.provider not in ("echo", "openai", "cli"):
        raise ConfigError(
            f"{source}: setting agent.provider: unknown provider {config.agent.provider!r}; use echo, openai or cli"
        )
    o = config.providers.openai
    if not o.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: setting providers.openai.base_url must start with http:// or https://")
    if o.context_tokens < 256 or o.max_retries < 0 or o.max_iterations < 1:
        raise ConfigError(
            f"{source}: providers.openai needs context_tokens >= 256, max_retries >= 0, max_iterations >= 1"
        )
    if config.agent.provider == "cli" and not config.providers.cli.argv:
        raise ConfigError(f"{source}: setting providers.cli.argv: the cli provider needs a command to run")
    w = config.ws
    if w.auth_timeout <= 0 or w.max_frame_bytes < 1024 or w.messages_per_minute < 1 or w.ping_interval < 0:
        raise ConfigError(
            f"{source}: settings ws.*: auth_timeout > 0, max_frame_bytes >= 1024, messages_per_minute >= 1 "
            "and ping_interval >= 0 are required"
        )
    if w.max_connections < 1:
        raise ConfigError(f"{source}: setting ws.max_connections must be >= 1")
    t = config.transcribe
    if t.http_url and not t.http_url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: setting transcribe.http_url must start with http:// or https://")
    if t.timeout <= 0:
        raise ConfigError(f"{source}: setting transcribe.timeout must be > 0 seconds")
    if config.files.max_upload_bytes < 1:
        raise ConfigError(f"{source}: setting files.max_upload_bytes must be >= 1")
    for name, cap in (
        ("daily_token_cap", config.usage.daily_token_cap),
        ("unowned_daily_token_cap", config.usage.unowned_daily_token_cap),
    ):
        if cap is not None and cap < 1:
            raise ConfigError(f"{source}: setting usage.{name} must be >= 1 (leave it out for no cap)")
    if config.auth.access_ttl <= 0 or config.auth.refresh_ttl <= 0:
        raise ConfigError(f"{source}: settings auth.access_ttl and auth.refresh_ttl must be > 0 seconds")
    if config.auth.invite_ttl <= 0:
        raise ConfigError(f"{source}: setting auth.invite_ttl must be > 0 seconds")
    if config.auth.hash_concurrency < 1:
        raise ConfigError(f"{source}: setting auth.hash_concurrency must be >= 1")
    lim = config.limits
    if min(lim.auth_per_minute, lim.chat_per_minute, lim.api_per_minute, lim.upload_per_minute) <= 0:
        raise ConfigError(f"{source}: every limits.*_per_minute must be > 0")
    if min(lim.auth_burst, lim.chat_burst, lim.api_burst, lim.upload_burst, lim.max_streams) < 1:
        raise ConfigError(f"{source}: every limits.*_burst and limits.max_streams must be >= 1")
    if lim.failed_auth_free < 0 or lim.failed_auth_max_delay < 1:
        raise ConfigError(f"{source}: settings limits.failed_auth_free >= 0 and limits.failed_auth_max_delay >= 1")
    if config.log.backups < 0 or config.log.max_bytes < 1024:
        raise ConfigError(f"{source}: setting log.max_bytes must be >= 1024 and log.backups >= 0")
    if config.outbox.max_attempts < 1 or config.outbox.backoff < 0 or config.outbox.timeout <= 0:
        raise ConfigError(f"{source}: setting outbox: max_attempts >= 1, backoff >= 0 and timeout > 0")
    for entry in config.outbound.allow:
        from gateway.outbound import parse_rule

        try:
            parse_rule(entry)
        except ValueError as exc:
            raise ConfigError(f"{source}: setting outbound.allow: {exc}") from None
    if config.connectors:
        from gateway.connectors.service import file_connectors
        from gateway.errors import GatewayError

        try:
            file_connectors(config.connectors)
        except GatewayError as exc:
            raise ConfigError(f"{source}: {exc.message}") from None


_SECRET_NAME = re.compile(r"token|secret|password|passwd|api_?key|credential|auth", re.I)


def secret_values(config: Config) -> list[str]:
    """Every secret the config holds (the token, provider and transcription keys, connectors' `{value}` secrets,
    the `cli` provider's secret-looking environment values), to redact wherever output leaves the process."""
    out = [config.server.token, config.providers.openai.api_key, config.transcribe.http_api_key]
    out += [v for k, v in config.providers.cli.env.items() if _SECRET_NAME.search(k)]
    for named in config.connectors.values():
        for settings in named.values() if isinstance(named, dict) else ():
            for value in settings.values() if isinstance(settings, dict) else ():
                if isinstance(value, dict) and isinstance(value.get("value"), str):
                    out.append(value["value"])
    return [s for s in out if s]


def check_token(token: str, what: str = "token") -> None:
    """Refuse empty, short and placeholder tokens."""
    if token.strip().lower() in _PLACEHOLDER_TOKENS:
        raise ConfigError(f"{what} is a placeholder; remove it to have a strong one generated")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{what} is too short ({len(token)} characters); use at least {MIN_TOKEN_LENGTH}, "
            "or remove it to have a strong one generated"
        )


def load_config(path: Path | None = None, *, env: dict[str, str] | None = None) -> tuple[Config, Path]:
    """Read the TOML file at `path` (default location when None; a missing file means defaults) plus env."""
    env = dict(os.environ) if env is None else env
    path = Path(env.get(f"{ENV_PREFIX}CONFIG") or default_config_path()) if path is None else path
    data: dict[str, Any] = {}
    if path.exists():
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = fold_seed_tables(data)  # before the environment, so that an env variable overrides [api] too
    except SeedConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    data = _merge(data, _env_overrides(env))
    try:
        return parse_config(data, source=str(path)), path.resolve()
    except ConfigError as exc:
        # Name the variable when the bad setting came from the environment (never its value: it may be a secret).
        m = re.search(r"settings? ([a-z_.]+)", str(exc))
        var = ENV_PREFIX + m.group(1).rstrip(".").replace(".", "_").upper() if m else ""
        blamed = sorted(k for k in env if var and (k == var or (m and m.group(1).endswith(".") and k.startswith(var))))
        if blamed:
            raise ConfigError(f"environment variable {', '.join(blamed)}{str(exc).removeprefix(str(path))}") from None
        raise


def paths_for(config: Config, config_file: Path) -> Paths:
    data_dir = Path(config.storage.data_dir).expanduser() if config.storage.data_dir else default_data_dir()
    log_file = Path(config.log.file).expanduser() if config.log.file else data_dir / "logs" / "gateway.log"
    workspace = Path(config.server.workspace).expanduser() if config.server.workspace else data_dir / "workspace"
    return Paths(
        config_file=config_file,
        data_dir=data_dir,
        db_file=data_dir / "gateway.db",
        secrets_key_file=data_dir / "secrets.key",
        token_file=data_dir / "token",
        jwt_secret_file=data_dir / "jwt_secret",
        files_dir=data_dir / "files",
        log_file=log_file,
        workspace=workspace,
    )


def ensure_token(config: Config, paths: Paths) -> tuple[str, bool]:
    """Return the token to use and whether it was just generated (saved 0600 in the data folder)."""
    if config.server.token:
        return config.server.token, False
    if paths.token_file.exists():
        token = paths.token_file.read_text().strip()
        check_token(token, f"token file {paths.token_file}")
        return token, False
    token = secrets.token_urlsafe(32)
    write_token(paths, token)
    return token, True


def make_private_dir(path: Path) -> int | None:
    """Create `path` owner-only (0700), or take group and other access away from an existing folder.

    Returns the mode it had when it was changed (None otherwise). Raises OSError when it cannot be created.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if not mode & 0o077:
        return None
    path.chmod(mode & 0o700)
    return mode


def write_token(paths: Paths, token: str) -> None:
    """Save `token` atomically with owner-only permissions."""
    paths.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = paths.token_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.replace(tmp, paths.token_file)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def shorten_token(token: str) -> str:
    """Show enough of a token to recognise it, never enough to use it."""
    return f"{token[:4]}…{token[-4:]}" if len(token) >= 12 else "…"


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
