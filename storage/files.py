"""Typed reads and writes of uploaded files' metadata (`files`); the bytes live under the data folder."""

from __future__ import annotations

import sqlite3

import msgspec

_COLUMNS = "id, owner, session_id, filename, extension, mime_type, size, key, created_at"


class FileRow(msgspec.Struct, frozen=True):
    id: str
    owner: str | None
    session_id: str | None
    filename: str
    extension: str
    mime_type: str
    size: int
    key: str  # path relative to the files folder, made by the server (never from the client's name)
    created_at: int


def add_file(conn: sqlite3.Connection, row: FileRow) -> None:
    conn.execute(f"INSERT INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", msgspec.structs.astuple(row))


def get_file(conn: sqlite3.Connection, file_id: str) -> FileRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
    return None if row is None else FileRow(*row)


def delete_file(conn: sqlite3.Connection, file_id: str) -> bool:
    return conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0


def files_of_session(conn: sqlite3.Connection, session_id: str) -> list[FileRow]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE session_id = ? ORDER BY id", (session_id,)).fetchall()
    return [FileRow(*r) for r in rows]


def attach(conn: sqlite3.Connection, file_ids: list[str], session_id: str) -> None:
    conn.executemany("UPDATE files SET session_id = ? WHERE id = ?", [(session_id, f) for f in file_ids])
