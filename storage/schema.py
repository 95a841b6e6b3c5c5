"""The schema, as an ordered list of named migrations; each runs once, inside one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from storage.clock import now_ms

# Each migration runs on the database's connection, inside the transaction that records it: plain SQL, or a
# function of storage/ for the few that move data.
Migration = tuple[str, Callable[[sqlite3.Connection], None]]


def _sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    """A migration made of plain SQL statements."""

    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return run


# sqlite-utils wrote the first tables (001, 002, 040, 041); they are now the very SQL it generated, so that a
# database created today has the same schema text as one created then (tests/storage/test_schema_sql.py checks
# it against sqlite-utils), and a first start never imports sqlite-utils (~3 MiB that stayed resident).
_m001_core = _sql(
    'CREATE TABLE "settings" (\n   "key" TEXT PRIMARY KEY,\n   "value" TEXT\n)',
    'CREATE TABLE "sessions" (\n   "id" TEXT PRIMARY KEY,\n   "transport" TEXT NOT NULL,\n'
    '   "chat_id" TEXT NOT NULL,\n   "topic_id" TEXT NOT NULL DEFAULT \'\',\n   "title" TEXT DEFAULT \'\',\n'
    '   "status" TEXT NOT NULL DEFAULT \'pending\',\n   "provider" TEXT,\n   "model" TEXT,\n   "owner" TEXT,\n'
    '   "last_seq" INTEGER NOT NULL DEFAULT 0,\n   "unread" INTEGER NOT NULL DEFAULT 0,\n'
    '   "latest_message" TEXT,\n   "latest_message_at" INTEGER,\n   "created_at" INTEGER NOT NULL,\n'
    '   "updated_at" INTEGER\n)',
    'CREATE UNIQUE INDEX "idx_sessions_transport_chat_id_topic_id"\n'
    '    ON "sessions" ("transport", "chat_id", "topic_id")',
    'CREATE TABLE "turns" (\n   "id" TEXT PRIMARY KEY,\n'
    '   "session_id" TEXT NOT NULL REFERENCES "sessions"("id"),\n   "state" TEXT NOT NULL,\n   "prompt" TEXT,\n'
    '   "result" TEXT,\n   "error" TEXT,\n   "created_at" INTEGER NOT NULL,\n   "started_at" INTEGER,\n'
    '   "ended_at" INTEGER\n)',
    'CREATE INDEX "idx_turns_session_id_state"\n    ON "turns" ("session_id", "state")',
    'CREATE INDEX "idx_turns_state"\n    ON "turns" ("state")',
    'CREATE TABLE "messages" (\n   "id" INTEGER PRIMARY KEY,\n'
    '   "session_id" TEXT NOT NULL REFERENCES "sessions"("id"),\n   "turn_id" TEXT,\n   "role" TEXT NOT NULL,\n'
    '   "content" TEXT NOT NULL,\n   "created_at" INTEGER NOT NULL\n)',
    'CREATE INDEX "idx_messages_session_id_id"\n    ON "messages" ("session_id", "id")',
    'CREATE TABLE "events" (\n   "id" INTEGER PRIMARY KEY,\n'
    '   "session_id" TEXT NOT NULL REFERENCES "sessions"("id"),\n   "seq" INTEGER NOT NULL,\n   "turn_id" TEXT,\n'
    '   "type" TEXT NOT NULL,\n   "body" BLOB,\n   "created_at" INTEGER NOT NULL\n)',
    'CREATE UNIQUE INDEX "idx_events_session_id_seq"\n    ON "events" ("session_id", "seq")',
)


def _m020_connectors(conn: sqlite3.Connection) -> None:
    # Plain SQL: the hot ingress table wants exact control of its keys (issue 4, docs/performance.md).
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


# Sequence numbers a session may have shown but not yet stored: after a crash it starts above them,
# so a client resuming from a number it saw never skips new events. See actors/session.py.
_m002_seq_reserved = _sql('ALTER TABLE "sessions" ADD COLUMN "seq_reserved" INTEGER NOT NULL DEFAULT 0')


def _m040_mcp(conn: sqlite3.Connection) -> None:
    from storage.mcp import migrate

    migrate(conn)


def _m041_skills(conn: sqlite3.Connection) -> None:
    from storage.skills import migrate

    migrate(conn)


def _m042_tool_prefs(conn: sqlite3.Connection) -> None:
    from storage.tool_prefs import migrate

    migrate(conn)


def _m046_seal_secrets(conn: sqlite3.Connection) -> None:
    from storage.sealing import migrate

    migrate(conn)


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
    applied: list[str] = []
    for name, fn in migrations:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(conn)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, now_ms()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(name)
    return applied
