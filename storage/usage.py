"""Token usage: what each turn cost (`turn_usage`), its sums per day, model, session or user, and the daily caps."""

from __future__ import annotations

import sqlite3
from typing import Literal

import msgspec

DAY_MS = 86_400_000
GROUPS = ("day", "model", "session", "user")
Group = Literal["day", "model", "session", "user"]


class UsageCapReachedError(Exception):
    """A new turn was refused: its owner used their tokens of the UTC day. Raised inside the transaction that
    would have stored the turn, so nothing of it is stored."""

    def __init__(self, used: int, cap: int, resets_at_ms: int) -> None:
        super().__init__(
            f"the daily token cap is reached ({used} of {cap} tokens used today, UTC); "
            "it resets at midnight UTC, or an admin can raise it"
        )
        self.used = used
        self.cap = cap
        self.resets_at_ms = resets_at_ms


class CapPolicy(msgspec.Struct, frozen=True):
    """The caps that apply where an account has none of its own: `default` for every account, `unowned` for turns
    of sessions no account owns (the gateway token's, connectors'). None: no cap."""

    default: int | None = None
    unowned: int | None = None


class UsageRow(msgspec.Struct, frozen=True):
    key: str | None  # the day (YYYY-MM-DD), model, session id or user id; None: turns of no account
    turns: int
    input_tokens: int
    output_tokens: int
    estimated_turns: int  # how many of `turns` had no usage report from their provider (counted at ~4 chars a token)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class TurnUsage(msgspec.Struct, frozen=True):
    turn_id: str
    session_id: str
    owner: str | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    estimated: bool
    created_at: int


def day_start(now_ms: int) -> int:
    """The start of the UTC day holding `now_ms`."""
    return now_ms - now_ms % DAY_MS


def record(
    conn: sqlite3.Connection,
    turn_id: str,
    session_id: str,
    *,
    owner: str | None,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    estimated: bool,
    now_ms: int,
) -> None:
    """Store one turn's usage and add it to its owner's day (once: a turn recorded again keeps its first row)."""
    added = conn.execute(
        "INSERT INTO turn_usage (turn_id, session_id, owner, provider, model, input_tokens, output_tokens, estimated, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (turn_id) DO NOTHING",
        (turn_id, session_id, owner, provider, model, input_tokens, output_tokens, int(estimated), now_ms),
    ).rowcount
    if added:
        conn.execute(
            "INSERT INTO usage_daily (owner, day, tokens) VALUES (?, ?, ?) "
            "ON CONFLICT (owner, day) DO UPDATE SET tokens = tokens + excluded.tokens",
            (owner or "", day_start(now_ms), input_tokens + output_tokens),
        )


def of_turn(conn: sqlite3.Connection, turn_id: str) -> TurnUsage | None:
    row = conn.execute(
        "SELECT turn_id, session_id, owner, provider, model, input_tokens, output_tokens, estimated, created_at "
        "FROM turn_usage WHERE turn_id = ?",
        (turn_id,),
    ).fetchone()
    if row is None:
        return None
    return TurnUsage(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), row[8])


_KEYS = {
    "day": "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')",
    "model": "model",
    "session": "session_id",
    "user": "owner",
}

ALL = object()  # summarize(owner=ALL): every owner's turns


def summarize(
    conn: sqlite3.Connection,
    group: Group,
    *,
    owner: str | object | None = ALL,
    from_ms: int | None = None,
    to_ms: int | None = None,
    limit: int = 1000,
) -> tuple[list[UsageRow], UsageRow]:
    """Sums of turns ended in [from_ms, to_ms), grouped by `group` (days ascending, else the largest first), and the
    grand total (key None). `owner`: one account's turns (None: those of no account), or ALL."""
    if group not in _KEYS:
        raise ValueError(f"unknown group {group!r}")
    where: list[str] = []
    args: list[object] = []
    if owner is not ALL:
        where.append("owner IS ?")
        args.append(owner)
    if from_ms is not None:
        where.append("created_at >= ?")
        args.append(from_ms)
    if to_ms is not None:
        where.append("created_at < ?")
        args.append(to_ms)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sums = "count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(estimated), 0)"
    order = "k" if group == "day" else "sum(input_tokens) + sum(output_tokens) DESC, k"
    rows = conn.execute(
        f"SELECT {_KEYS[group]} AS k, {sums} FROM turn_usage {clause} GROUP BY k ORDER BY {order} LIMIT ?",
        (*args, limit),
    ).fetchall()
    total = conn.execute(f"SELECT NULL, {sums} FROM turn_usage {clause}", args).fetchone()
    return [UsageRow(*r) for r in rows], UsageRow(*total)


def used_today(conn: sqlite3.Connection, owner: str | None, *, now_ms: int) -> int:
    """Tokens (in and out) of `owner`'s turns ended in the UTC day of `now_ms`."""
    row = conn.execute(
        "SELECT tokens FROM usage_daily WHERE owner = ? AND day = ?", (owner or "", day_start(now_ms))
    ).fetchone()
    return 0 if row is None else int(row[0])


def get_cap(conn: sqlite3.Connection, user_id: str) -> int | None:
    """An account's own daily cap (None: it has none, the default applies)."""
    row = conn.execute("SELECT daily_tokens FROM usage_caps WHERE user_id = ?", (user_id,)).fetchone()
    return None if row is None else int(row[0])


def caps_of(conn: sqlite3.Connection, user_ids: list[str]) -> dict[str, int]:
    """The own caps of those accounts that have one."""
    if not user_ids:
        return {}
    marks = ",".join("?" * len(user_ids))
    rows = conn.execute(f"SELECT user_id, daily_tokens FROM usage_caps WHERE user_id IN ({marks})", user_ids)
    return {str(r[0]): int(r[1]) for r in rows}


def sessions_named(conn: sqlite3.Connection, session_ids: list[str]) -> dict[str, tuple[str, str, str, str]]:
    """(title, transport, chat_id, topic_id) of those sessions that still exist (usage outlives its session)."""
    if not session_ids:
        return {}
    marks = ",".join("?" * len(session_ids))
    rows = conn.execute(
        f"SELECT id, title, transport, chat_id, topic_id FROM sessions WHERE id IN ({marks})", session_ids
    )
    return {str(r[0]): (str(r[1] or ""), str(r[2]), str(r[3]), str(r[4] or "")) for r in rows}


def all_caps(conn: sqlite3.Connection) -> dict[str, int]:
    """Every account's own cap."""
    return {str(r[0]): int(r[1]) for r in conn.execute("SELECT user_id, daily_tokens FROM usage_caps")}


def set_cap(conn: sqlite3.Connection, user_id: str, daily_tokens: int | None, *, now_ms: int) -> None:
    """Give an account its own daily cap, or (None) drop it so the default applies."""
    if daily_tokens is None:
        conn.execute("DELETE FROM usage_caps WHERE user_id = ?", (user_id,))
        return
    conn.execute(
        "INSERT INTO usage_caps (user_id, daily_tokens, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (user_id) DO UPDATE SET daily_tokens = excluded.daily_tokens, updated_at = excluded.updated_at",
        (user_id, daily_tokens, now_ms),
    )


def cap_for(conn: sqlite3.Connection, owner: str | None, policy: CapPolicy) -> int | None:
    """The cap that applies to `owner`: their own, else the policy's."""
    if owner is None:
        return policy.unowned
    own = get_cap(conn, owner)
    return own if own is not None else policy.default


def check_cap(conn: sqlite3.Connection, owner: str | None, policy: CapPolicy, *, now_ms: int) -> None:
    """Raise UsageCapReachedError when `owner` has a cap and today's tokens have reached it."""
    if policy.default is None and policy.unowned is None:
        # No default cap: only an account's own one can apply (the common case costs one indexed lookup).
        if owner is None or (cap := get_cap(conn, owner)) is None:
            return
    else:
        cap = cap_for(conn, owner, policy)
        if cap is None:
            return
    used = used_today(conn, owner, now_ms=now_ms)
    if used >= cap:
        raise UsageCapReachedError(used, cap, day_start(now_ms) + DAY_MS)
