"""User tool preferences in storage: set, read, the startup snapshot, forgetting a deleted tool."""

from __future__ import annotations

from pathlib import Path

from storage import tool_prefs as prefs_db
from storage.db import open_db


def test_preferences_round_trip_and_are_forgotten_with_the_tool(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "p.db")
    prefs_db.set_pref(conn, "u1", "mcp", "calc", False, now_ms=1)
    prefs_db.set_pref(conn, "u1", "mcp", "web", True, now_ms=1)
    prefs_db.set_pref(conn, "u2", "mcp", "calc", False, now_ms=1)
    prefs_db.set_pref(conn, "u1", "a2a", "calc", False, now_ms=1)
    assert prefs_db.prefs_of(conn, "u1", "mcp") == {"calc": False, "web": True}
    assert prefs_db.all_disabled(conn, "mcp") == {"u1": {"calc"}, "u2": {"calc"}}
    prefs_db.set_pref(conn, "u2", "mcp", "calc", True, now_ms=2)  # switched back on: replaces, never duplicates
    assert prefs_db.all_disabled(conn, "mcp") == {"u1": {"calc"}}
    assert prefs_db.forget_tool(conn, "mcp", "calc") == 2
    assert prefs_db.prefs_of(conn, "u1", "mcp") == {"web": True}
    assert prefs_db.prefs_of(conn, "u1", "a2a") == {"calc": False}  # another kind is untouched
