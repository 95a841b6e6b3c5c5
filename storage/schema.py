"""The schema, as an ordered list of named migrations; each runs once, inside one transaction."""

from __future__ import annotations

import gc
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any

from storage.clock import now_ms

# Each migration takes a sqlite_utils.Database. sqlite-utils is imported only when a migration
# is pending: it costs ~15 MiB and ~100 ms, which an up-to-date gateway never pays.
Migration = tuple[str, Callable[[Any], None]]


def _m001_core(db: Any) -> None:
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["sessions"].create(
        {
            "id": str,
            "transport": str,
            "chat_id": str,
            "topic_id": str,
            "title": str,
            "status": str,
            "provider": str,
            "model": str,
            "owner": str,
            "last_seq": int,
            "unread": int,
            "latest_message": str,
            "latest_message_at": int,
            "created_at": int,
            "updated_at": int,
        },
        pk="id",
        not_null={"transport", "chat_id", "topic_id", "status", "last_seq", "unread", "created_at"},
        defaults={"topic_id": "", "status": "pending", "last_seq": 0, "unread": 0, "title": ""},
    )
    db["sessions"].create_index(["transport", "chat_id", "topic_id"], unique=True)
    db["turns"].create(
        {
            "id": str,
            "session_id": str,
            "state": str,
            "prompt": str,
            "result": str,
            "error": str,
            "created_at": int,
            "started_at": int,
            "ended_at": int,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "state", "created_at"},
    )
    db["turns"].create_index(["session_id", "state"])
    db["turns"].create_index(["state"])
    db["messages"].create(
        {"id": int, "session_id": str, "turn_id": str, "role": str, "content": str, "created_at": int},
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "role", "content", "created_at"},
    )
    db["messages"].create_index(["session_id", "id"])
    db["events"].create(
        {
            "id": int,
            "session_id": str,
            "seq": int,
            "turn_id": str,
            "type": str,
            "body": bytes,
            "created_at": int,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "seq", "type", "created_at"},
    )
    db["events"].create_index(["session_id", "seq"], unique=True)


def _m020_connectors(db: Any) -> None:
    # Plain SQL: the hot ingress table wants exact control of its keys (issue 4, docs/performance.md).
    conn = db.conn
    conn.execute(
        "CREATE TABLE connectors (kind TEXT NOT NULL, name TEXT NOT NULL, settings BLOB NOT NULL, "
        "created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (kind, name))"
    )
    # Secrets live apart from connector rows so that no view or dump of a connector can carry one.
    conn.execute(
        "CREATE TABLE secrets (slot TEXT PRIMARY KEY, value TEXT NOT NULL, created_at INTEGER NOT NULL, "
        "updated_at INTEGER NOT NULL)"
    )
    conn.execute("CREATE TABLE personas (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
    # One row per acknowledged event; the UNIQUE key is the idempotency receipt, written in the same row
    # (hence the same transaction) as the event. INTEGER rowid keys keep inserts appending.
    conn.execute(
        "CREATE TABLE ingress_events (id INTEGER PRIMARY KEY, connector TEXT NOT NULL, event_key TEXT NOT NULL, "
        "fingerprint BLOB NOT NULL, session_id TEXT NOT NULL, text TEXT NOT NULL, payload BLOB NOT NULL, "
        "created_at INTEGER NOT NULL, UNIQUE (connector, event_key))"
    )
    conn.execute("CREATE TABLE ingress_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), last_id INTEGER NOT NULL)")
    conn.execute("INSERT INTO ingress_cursor (id, last_id) VALUES (1, 0)")
    conn.execute("CREATE TABLE poll_offsets (connector TEXT PRIMARY KEY, next_offset INTEGER NOT NULL)")
    conn.execute(
        "CREATE TABLE session_routing (session_id TEXT PRIMARY KEY, reply_targets BLOB NOT NULL, "
        "updated_at INTEGER NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, delivery_id TEXT NOT NULL UNIQUE, session_id TEXT NOT NULL, "
        "turn_id TEXT NOT NULL, plugin TEXT NOT NULL, connector TEXT NOT NULL, target BLOB NOT NULL, "
        "text TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "next_attempt_at INTEGER NOT NULL, last_error TEXT, created_at INTEGER NOT NULL, "
        "updated_at INTEGER NOT NULL)"
    )
    conn.execute("CREATE INDEX outbox_due ON outbox (state, next_attempt_at)")
    # A turn listed here has had its deliveries planned; the startup scan looks for finished turns missing.
    conn.execute("CREATE TABLE outbox_turns (turn_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL)")


def _m002_seq_reserved(db: Any) -> None:
    # Sequence numbers a session may have shown but not yet stored: after a crash it starts above them,
    # so a client resuming from a number it saw never skips new events. See actors/session.py.
    db["sessions"].add_column("seq_reserved", int, not_null_default=0)


def _m040_mcp(db: Any) -> None:
    from storage.mcp import migrate

    migrate(db)


def _m041_skills(db: Any) -> None:
    from storage.skills import migrate

    migrate(db)


def _m042_tool_prefs(db: Any) -> None:
    from storage.tool_prefs import migrate

    migrate(db)


def _m046_seal_secrets(db: Any) -> None:
    from storage.sealing import migrate

    migrate(db.conn)


def _sql(*statements: str) -> Callable[[Any], None]:
    """A migration made of plain SQL statements (clearer than sqlite-utils calls for constraints)."""

    def run(db: Any) -> None:
        for statement in statements:
            db.execute(statement)

    return run


_m030_users = _sql(
    """CREATE TABLE users (
        id TEXT PRIMARY KEY, username TEXT UNIQUE, email TEXT UNIQUE, nickname TEXT NOT NULL DEFAULT '',
        avatar TEXT NOT NULL DEFAULT '', password_hash TEXT NOT NULL, role TEXT NOT NULL, status TEXT NOT NULL,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
    """CREATE TABLE refresh_tokens (
        id TEXT PRIMARY KEY, family TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE, expires_at INTEGER NOT NULL, used_at INTEGER, revoked INTEGER NOT NULL
        DEFAULT 0, created_at INTEGER NOT NULL)""",
    "CREATE INDEX refresh_tokens_family ON refresh_tokens (family)",
    "CREATE INDEX sessions_owner ON sessions (owner, updated_at)",
)

_m031_notifications = _sql(
    """CREATE TABLE notifications (
        id TEXT PRIMARY KEY, owner TEXT, title TEXT NOT NULL, body TEXT NOT NULL, source TEXT NOT NULL,
        read INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL)""",
    "CREATE INDEX notifications_read ON notifications (read, id)",
)

_m032_cron = _sql(
    # `connector` is nullable and named so: the connectors' module reads it to deliver a job's reply.
    """CREATE TABLE cron_jobs (
        id TEXT PRIMARY KEY, owner TEXT, name TEXT NOT NULL DEFAULT '', cron TEXT, interval_seconds INTEGER,
        session_id TEXT, connector TEXT, chat_id TEXT, prompt TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,
        next_fire_at INTEGER, last_fire_at INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
    "CREATE INDEX cron_jobs_due ON cron_jobs (enabled, next_fire_at)",
    # One row per fired slot; the unique key is what makes a slot fire at most once, even across a crash.
    """CREATE TABLE cron_runs (
        id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, slot_at INTEGER NOT NULL, trigger TEXT NOT NULL,
        status TEXT NOT NULL, session_id TEXT, turn_id TEXT, error TEXT, started_at INTEGER NOT NULL,
        UNIQUE (job_id, slot_at))""",
)

_m033_files = _sql(
    """CREATE TABLE files (
        id TEXT PRIMARY KEY, owner TEXT, session_id TEXT, filename TEXT NOT NULL, extension TEXT NOT NULL,
        mime_type TEXT NOT NULL, size INTEGER NOT NULL, key TEXT NOT NULL, created_at INTEGER NOT NULL)""",
    "CREATE INDEX files_owner ON files (owner, id)",
    "CREATE INDEX files_session ON files (session_id)",
)

MIGRATIONS: list[Migration] = [
    ("001_core", _m001_core),
    ("002_seq_reserved", _m002_seq_reserved),
    ("020_connectors", _m020_connectors),
    ("030_users", _m030_users),
    ("031_notifications", _m031_notifications),
    ("032_cron", _m032_cron),
    ("033_files", _m033_files),
    ("040_mcp_servers", _m040_mcp),
    ("041_skills_a2a", _m041_skills),
    ("042_user_tool_prefs", _m042_tool_prefs),
    # The last ingress event fed to each session, written in the transaction that creates the turn holding it,
    # so a crash between feeding the agent and advancing the global cursor never feeds an event twice.
    ("043_ingress_fed", _sql("CREATE TABLE ingress_fed (session_id TEXT PRIMARY KEY, last_id INTEGER NOT NULL)")),
    # `sessions.provider`/`model` now mean a session's own pin (NULL: follow the gateway default at each turn).
    # Until now they only recorded the default at creation and nothing read them: cleared, so no old session is
    # pinned by accident and every one keeps following the default as before.
    ("044_session_pins", _sql("UPDATE sessions SET provider = NULL, model = NULL")),
    # Whether the owner (gateway token) set an MCP server's URL, which may then be a private address (the outbound
    # policy, gateway/outbound.py). Rows from before are treated as set by an admin account.
    ("045_mcp_url_by_owner", _sql("ALTER TABLE mcp_servers ADD COLUMN url_by_owner INTEGER NOT NULL DEFAULT 0")),
    # Secrets written before they were sealed at rest (storage/sealing.py) are sealed now.
    ("046_seal_secrets", _m046_seal_secrets),
    # Connector ingress went on storing the config file's provider as the pin of each session it created, so those
    # chats ignored the default chosen over the API (issue 15 item 1). Nobody chose those pins: a session created
    # by ingress has its first event's timestamp, and ingress never stored a model. A pin with a model is kept.
    (
        "047_connector_pins",
        _sql(
            "UPDATE sessions SET provider = NULL WHERE id IN (SELECT s.id FROM ingress_events e "
            "JOIN sessions s ON s.id = e.session_id AND s.created_at = e.created_at "
            "WHERE s.provider IS NOT NULL AND s.model IS NULL)"
        ),
    ),
    # Reply targets an operator PUT are theirs: ingress no longer replaces them (issue 15 item 9).
    (
        "048_operator_reply_targets",
        _sql("ALTER TABLE session_routing ADD COLUMN by_operator INTEGER NOT NULL DEFAULT 0"),
    ),
    # Accounts (issue 14): access tokens issued before `tokens_after` (ms; a password change) stop working, and
    # single-use invite codes for `[auth] registration = "invite"` (only their SHA-256 is kept).
    (
        "050_accounts",
        _sql(
            "ALTER TABLE users ADD COLUMN tokens_after INTEGER NOT NULL DEFAULT 0",
            """CREATE TABLE invites (
                code_hash TEXT PRIMARY KEY, created_by TEXT, expires_at INTEGER NOT NULL, used_at INTEGER,
                used_by TEXT, created_at INTEGER NOT NULL)""",
        ),
    ),
    # Cron that fits (issue 18 item 4): a job's IANA timezone, and each run's end. Runs recorded before this had
    # `claimed` (a crash cut it off), `failed` (never submitted) or `submitted` (its turn's end was not recorded):
    # they take the end of their turn where it is known, the statuses now being running | ok | error | skipped.
    (
        "060_cron_timezone_runs",
        _sql(
            "ALTER TABLE cron_jobs ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC'",
            "ALTER TABLE cron_runs ADD COLUMN ended_at INTEGER",
            "UPDATE cron_runs SET status = 'error', ended_at = started_at, "
            "error = COALESCE(error, 'the gateway stopped before the run''s turn was submitted') "
            "WHERE status IN ('claimed', 'failed')",
            "UPDATE cron_runs SET status = 'running' WHERE status = 'submitted'",
            "CREATE INDEX cron_runs_newest ON cron_runs (job_id, id)",
            "CREATE INDEX cron_runs_open ON cron_runs (job_id) WHERE status = 'running'",
        ),
    ),
    # Token usage (issue 18 item 8): one row per turn that reached its provider, kept when its session is deleted
    # (a user's day still counts against their cap); `estimated` when the provider reported none. An account's
    # own daily cap (tokens in and out per UTC day) beside it; none: the config's default applies.
    (
        "061_usage",
        _sql(
            """CREATE TABLE turn_usage (
                turn_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, owner TEXT, provider TEXT NOT NULL,
                model TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
                estimated INTEGER NOT NULL, created_at INTEGER NOT NULL)""",
            "CREATE INDEX turn_usage_owner_time ON turn_usage (owner, created_at)",
            "CREATE INDEX turn_usage_time ON turn_usage (created_at)",
            # Each owner's tokens per UTC day (owner '' for no account), kept beside the rows: a cap check is one
            # lookup however many turns the day had.
            """CREATE TABLE usage_daily (
                owner TEXT NOT NULL, day INTEGER NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (owner, day))""",
            """CREATE TABLE usage_caps (
                user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
                daily_tokens INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
        ),
    ),
    # Whether the owner (gateway token) registered an A2A agent, whose URL may then be a private address when a turn
    # calls it (the outbound policy). Rows from before are treated as registered by an admin account, as 045 did.
    ("062_a2a_url_by_owner", _sql("ALTER TABLE a2a_servers ADD COLUMN url_by_owner INTEGER NOT NULL DEFAULT 0")),
    # A user's notification stream (`GET /api/notifications/stream`) reads "theirs after this id" at each one.
    ("062_notifications_owner", _sql("CREATE INDEX notifications_owner ON notifications (owner, id)")),
]


def _applied(conn: sqlite3.Connection) -> set[str]:
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
    return {row[0] for row in conn.execute("SELECT name FROM _migrations")}


def run_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction; return the names applied."""
    done = _applied(conn)
    pending = [(name, fn) for name, fn in migrations if name not in done]
    if not pending:
        return []
    loaded = set(sys.modules)
    try:
        return _apply(conn, pending)
    finally:
        _unload({name for name in set(sys.modules) - loaded if name.split(".")[0] in _MIGRATION_ONLY})


def _apply(conn: sqlite3.Connection, pending: Sequence[Migration]) -> list[str]:
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    applied: list[str] = []
    for name, fn in pending:
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(db)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, now_ms()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(name)
    return applied


# What sqlite-utils brings, used by nothing else at start-up (dateutil is croniter's too: it imports it again).
_MIGRATION_ONLY = {"sqlite_utils", "sqlite_fts4", "click", "pluggy", "dateutil"}


def _unload(names: set[str]) -> None:
    """Forget the libraries the migrations imported (several MiB), so that a gateway's first start stays close to
    the next ones: nothing holds them once the migrations are done, and whoever needs one later imports it
    again (only those this run imported: a library already loaded before stays as it was)."""
    for name in names:
        sys.modules.pop(name, None)
    gc.collect()
