"""Durable ingress: one row per acknowledged event, whose UNIQUE (connector, event_key) is the idempotency receipt."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from storage import connectors as conn_db
from storage import sessions as sess_db

Status = Literal["accepted", "duplicate", "rejected"]
KeyTuple = tuple[str, str, str]


class SessionSpec(msgspec.Struct, frozen=True):
    """How to find an event's session, in order: fixed id, given id, an existing candidate key, a new first key."""

    candidates: tuple[KeyTuple, ...] = ()
    fixed_session_id: str | None = None
    session_id: str | None = None
    create_if_missing: bool = True
    transport: str = ""  # for a fixed session created on first use


class IngressItem(msgspec.Struct, frozen=True, gc=False):
    """One event to store. A Struct, not a dataclass: batch ingress builds one per event (~0.1 µs, not ~0.7)."""

    event_key: str
    fingerprint: bytes
    text: str
    payload: bytes | msgspec.Raw  # stored as it is (a Raw: the item's bytes within the request body)
    session: SessionSpec
    # Replace the session's reply targets with these when they differ (None: leave them alone).
    reply_targets: list[dict[str, Any]] | None = None


class Outcome(msgspec.Struct, frozen=True):
    status: Status
    session_id: str | None = None
    reason: str | None = None
    created: bool = False  # a new row was written (the dispatcher has work)


class _BatchCache(msgspec.Struct):
    keys: dict[KeyTuple, str | None] = msgspec.field(default_factory=dict)  # None: no session has that key
    ids: dict[str, bool] = msgspec.field(default_factory=dict)
    targets: dict[str, bytes | None] = msgspec.field(default_factory=dict)


class _Reject(Exception):
    pass


def _session_exists(conn: sqlite3.Connection, cache: _BatchCache, session_id: str) -> bool:
    if session_id not in cache.ids:
        cache.ids[session_id] = (
            conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None
        )
    return cache.ids[session_id]


def _find(conn: sqlite3.Connection, cache: _BatchCache, key: KeyTuple) -> str | None:
    if key in cache.keys:
        return cache.keys[key]
    row = conn.execute("SELECT id FROM sessions WHERE transport = ? AND chat_id = ? AND topic_id = ?", key).fetchone()
    if row is not None:
        cache.keys[key] = str(row[0])
        return str(row[0])
    return None


def _find_all(conn: sqlite3.Connection, cache: _BatchCache, keys: set[KeyTuple]) -> None:
    """Look every candidate key of a batch up at once (one query per transport, on the unique index's prefix)."""
    by_transport: dict[str, set[str]] = {}
    for transport, chat, _ in keys:
        by_transport.setdefault(transport, set()).add(chat)
    for key in keys:
        cache.keys[key] = None  # the batch's own creations fill in what this leaves empty
    for transport, chats in by_transport.items():
        listed = list(chats)
        for start in range(0, len(listed), 500):
            chunk = listed[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for chat, topic, sid in conn.execute(
                f"SELECT chat_id, topic_id, id FROM sessions WHERE transport = ? AND chat_id IN ({marks})",
                [transport, *chunk],
            ):
                if (transport, chat, topic) in keys:
                    cache.keys[(transport, chat, topic)] = str(sid)


def resolve_session(conn: sqlite3.Connection, spec: SessionSpec, *, now_ms: int, cache: Any = None) -> str:
    """Return the session id for `spec`, creating the session when allowed; raise ValueError with a reason."""
    c: _BatchCache = cache if isinstance(cache, _BatchCache) else _BatchCache()
    try:
        return _resolve(conn, c, spec, now_ms)
    except _Reject as exc:
        raise ValueError(str(exc)) from None


def _resolve(conn: sqlite3.Connection, cache: _BatchCache, spec: SessionSpec, now_ms: int) -> str:
    if spec.fixed_session_id:
        sid = spec.fixed_session_id
        if not _session_exists(conn, cache, sid):
            if not spec.create_if_missing:
                raise _Reject(f"session {sid} does not exist and session_policy.create_if_missing is false")
            t, topic = (spec.candidates[0][0], spec.candidates[0][2]) if spec.candidates else (spec.transport, "")
            if not t:
                raise _Reject(f"session {sid} does not exist")
            conn.execute(
                # No provider pin: a connector's chat follows the gateway default like any other (issue 15 item 1).
                "INSERT INTO sessions (id, transport, chat_id, topic_id, title, status, last_seq, unread, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, '', 'pending', 0, 0, ?, ?)",
                (sid, t, f"fixed:{sid}", topic, now_ms, now_ms),
            )
            cache.ids[sid] = True
        return sid
    if spec.session_id:
        if not _session_exists(conn, cache, spec.session_id):
            raise _Reject(f"session {spec.session_id} does not exist")
        return spec.session_id
    for key in spec.candidates:
        found = _find(conn, cache, key)
        if found is not None:
            return found
    if not spec.candidates:
        raise _Reject("cannot derive a session: give thread.path, routing_key, binding keys or a session id")
    if not spec.create_if_missing:
        raise _Reject("no session is bound to this event and session_policy.create_if_missing is false")
    key = spec.candidates[0]
    row = sess_db.get_or_create_session(conn, *key, now_ms=now_ms)
    cache.keys[key] = row.id
    return row.id


SamePayload = Callable[[bytes, bytes], bool]


def ingest(
    conn: sqlite3.Connection,
    connector: str,
    items: Sequence[IngressItem | Outcome],
    *,
    now_ms: int,
    poll_offset: int | None = None,
    same_payload: SamePayload | None = None,
) -> list[Outcome]:
    """Store a batch of events in the caller's transaction; an Outcome in `items` passes through unchanged.

    Each item is independent (a rejected one does not stop the next). `poll_offset`, when given, is saved
    as the connector's next polling offset in the same transaction as the updates it confirms.

    An event key already stored answers `duplicate` when its fingerprint is the stored one, else `rejected`;
    `same_payload(stored, new)`, when given, decides instead whenever the fingerprints differ, from the two
    payloads: a connector that fingerprints the bytes it was sent still answers `duplicate` to the same event
    spelled otherwise, and to receipts written under an earlier fingerprint definition.
    """
    cache = _BatchCache()
    out: list[Outcome] = []
    # One lookup for the whole batch instead of one per event; then one executemany for the new rows.
    # Both run inside the caller's transaction on the only writer connection, so nothing can slip between.
    keys = list({i.event_key for i in items if isinstance(i, IngressItem)})
    # event key -> (fingerprint, session id, payload when this batch wrote it: a stored one is read when needed)
    prior: dict[str, tuple[bytes, str, bytes | msgspec.Raw | None]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for key, fp, sid in conn.execute(
            "SELECT event_key, fingerprint, session_id FROM ingress_events "
            f"WHERE connector = ? AND event_key IN ({marks})",
            [connector, *chunk],
        ):
            prior[key] = (bytes(fp), str(sid), None)
    # Adapters share one SessionSpec per thread: resolve each distinct one once, their candidate keys in one query.
    specs = {id(i.session): i.session for i in items if isinstance(i, IngressItem) and i.event_key not in prior}
    candidates = {
        k for spec in specs.values() if not spec.fixed_session_id and not spec.session_id for k in spec.candidates
    }
    if candidates:
        _find_all(conn, cache, candidates)
    rows: list[tuple[Any, ...]] = []
    by_spec: dict[int, str] = {}
    accepted: dict[str, Outcome] = {}  # Outcomes are immutable: one per session, reused
    for item in items:
        if isinstance(item, Outcome):
            out.append(item)
            continue
        seen = prior.get(item.event_key)
        if seen is not None:
            out.append(_replay(conn, connector, seen, item, same_payload))
            continue
        sid_or_none = by_spec.get(id(item.session))
        if sid_or_none is None:
            try:
                sid_or_none = by_spec[id(item.session)] = _resolve(conn, cache, item.session, now_ms)
            except _Reject as exc:
                out.append(Outcome("rejected", reason=str(exc)))
                continue
        sid = sid_or_none
        rows.append((connector, item.event_key, item.fingerprint, sid, item.text, item.payload, now_ms))
        prior[item.event_key] = (item.fingerprint, sid, item.payload)  # a later copy in the same batch: duplicate
        if item.reply_targets is not None:
            _update_targets(conn, cache, sid, item.reply_targets, now_ms)
        outcome = accepted.get(sid)
        if outcome is None:
            outcome = accepted[sid] = Outcome("accepted", session_id=sid, created=True)
        out.append(outcome)
    _insert(conn, rows)
    if poll_offset is not None:
        conn.execute(
            "INSERT INTO poll_offsets (connector, next_offset) VALUES (?, ?) "
            "ON CONFLICT (connector) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
            (connector, poll_offset),
        )
    return out


_INSERT = (
    "INSERT INTO ingress_events (connector, event_key, fingerprint, session_id, text, payload, created_at) VALUES "
)
_ROWS_PER_INSERT = 256  # 7 parameters each: far below SQLite's 32766


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    # One multi-row INSERT, not executemany: the sqlite3 module lets go of the GIL and takes it back around every
    # statement step, and each time it must wait for the event loop's thread to let go of it too; one step per
    # batch instead of one per row keeps the storage thread from queueing behind the loop 100 times a request.
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        conn.execute(_INSERT + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk)), [v for row in chunk for v in row])


def _replay(
    conn: sqlite3.Connection,
    connector: str,
    prior: tuple[bytes, str, bytes | msgspec.Raw | None],
    item: IngressItem,
    same_payload: SamePayload | None,
) -> Outcome:
    fp, sid, payload = prior
    if fp == item.fingerprint:
        return Outcome("duplicate", session_id=sid)
    if same_payload is not None:
        if payload is None:
            row = conn.execute(
                "SELECT payload FROM ingress_events WHERE connector = ? AND event_key = ?", (connector, item.event_key)
            ).fetchone()
            payload = b"" if row is None else row[0]
        if same_payload(bytes(payload), bytes(item.payload)):
            return Outcome("duplicate", session_id=sid)
    return Outcome(
        "rejected",
        session_id=None,
        reason=f"event {item.event_key!r} was already accepted with a different payload; use a new event id",
    )


_OPERATOR = b"operator"  # in the cache: the operator's targets, which ingress leaves alone (never a JSON list)


def _update_targets(
    conn: sqlite3.Connection, cache: _BatchCache, sid: str, targets: list[dict[str, Any]], now_ms: int
) -> None:
    # Written only when they change, so a busy thread does not rewrite the same row per event.
    blob = msgspec.json.encode(targets)
    if sid not in cache.targets:
        row = conn.execute(
            "SELECT reply_targets, by_operator FROM session_routing WHERE session_id = ?", (sid,)
        ).fetchone()
        cache.targets[sid] = None if row is None else _OPERATOR if row[1] else bytes(row[0])
    if cache.targets[sid] not in (blob, _OPERATOR):
        conn_db.set_reply_targets(conn, sid, targets, now_ms=now_ms)
        cache.targets[sid] = blob


def replay_of(conn: sqlite3.Connection, connector: str, event_key: str, fingerprint: bytes) -> Outcome | None:
    """The answer for an event already received (duplicate, or rejected for another payload); None when new."""
    row = conn.execute(
        "SELECT fingerprint, session_id FROM ingress_events WHERE connector = ? AND event_key = ?",
        (connector, event_key),
    ).fetchone()
    if row is None:
        return None
    return _replay(
        conn,
        connector,
        (bytes(row[0]), str(row[1]), None),
        IngressItem(event_key, fingerprint, "", b"", SessionSpec()),
        None,
    )


def poll_offset(conn: sqlite3.Connection, connector: str) -> int:
    """Return the next polling offset saved for a connector (0 when none)."""
    row = conn.execute("SELECT next_offset FROM poll_offsets WHERE connector = ?", (connector,)).fetchone()
    return 0 if row is None else int(row[0])


class Pending(msgspec.Struct, frozen=True):
    id: int
    session_id: str
    transport: str
    chat_id: str
    topic_id: str
    text: str


def undispatched(conn: sqlite3.Connection, *, limit: int = 500) -> list[Pending]:
    """Return stored events not yet fed to the agent, oldest first."""
    rows = conn.execute(
        "SELECT e.id, e.session_id, s.transport, s.chat_id, s.topic_id, e.text FROM ingress_events e "
        "JOIN sessions s ON s.id = e.session_id LEFT JOIN ingress_fed f ON f.session_id = e.session_id "
        "WHERE e.id > (SELECT last_id FROM ingress_cursor WHERE id = 1) AND (f.last_id IS NULL OR e.id > f.last_id) "
        "ORDER BY e.id LIMIT ?",
        (limit,),
    ).fetchall()
    return [Pending(*r) for r in rows]


def mark_fed(conn: sqlite3.Connection, session_id: str, last_id: int) -> None:
    """Record that the events of `session_id` up to `last_id` are in a turn (call it in that turn's transaction)."""
    conn.execute(
        "INSERT INTO ingress_fed (session_id, last_id) VALUES (?, ?) "
        "ON CONFLICT (session_id) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
        (session_id, last_id),
    )


def advance_cursor(conn: sqlite3.Connection, last_id: int) -> None:
    """Record that every event up to `last_id` has been fed to the agent."""
    conn.execute("UPDATE ingress_cursor SET last_id = max(last_id, ?) WHERE id = 1", (last_id,))


def count_events(conn: sqlite3.Connection, connector: str | None = None) -> int:
    """Return how many events are stored (for one connector when given)."""
    if connector is None:
        return int(conn.execute("SELECT count(*) FROM ingress_events").fetchone()[0])
    return int(conn.execute("SELECT count(*) FROM ingress_events WHERE connector = ?", (connector,)).fetchone()[0])


def backlog(conn: sqlite3.Connection) -> int:
    """Return how many stored events wait to be fed to the agent."""
    row = conn.execute(
        "SELECT count(*) FROM ingress_events WHERE id > (SELECT last_id FROM ingress_cursor WHERE id = 1)"
    ).fetchone()
    return int(row[0])
