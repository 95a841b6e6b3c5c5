"""`gateway backup` and `gateway restore`: a checked 0600 copy of the database, and putting it back."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from gateway import __version__
from gateway.config.file import Config, Paths
from gateway.daemon.lock import LockHeldError, acquire, live_lock
from storage.backup import BackupError, backup, check_file, install_key, is_gateway_db, key_opens, restore
from storage.sealing import SecretsKeyError

EXIT_OK, EXIT_FAILURE = 0, 1
# A database at least this large shows its progress while it is copied (a Pi's SD card copies ~20 MiB/s).
PROGRESS_BYTES = 32 * 1024 * 1024
_MIB = 1024 * 1024


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_json(data: dict[str, Any]) -> None:
    print(msgspec.json.format(msgspec.json.encode(data)).decode(), flush=True)


class _Progress:
    """One stderr line per tenth of the copy (rewritten in place on a terminal)."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth == self.shown:
            return
        self.shown = tenth
        line = f"copying: {10 * tenth:3d} % of {self.total_bytes / _MIB:.0f} MiB"
        if self.tty:
            sys.stderr.write(f"\r{line}" + ("\n" if done >= total else ""))
            sys.stderr.flush()
        else:
            _say(line)


def _key_report(db_file: Path, key_file: Path) -> dict[str, Any]:
    """What the user must know about the secrets key of the backup at `db_file`."""
    report: dict[str, Any] = {"keyInside": False, "keyFile": str(key_file), "keyExists": key_file.exists()}
    try:
        report["keyOpens"] = key_opens(db_file, key_file)
    except SecretsKeyError as exc:
        report["keyOpens"] = False
        report["keyProblem"] = str(exc)
    return report


def run_backup(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    """`gateway backup FILE`: an online, integrity-checked 0600 copy of this gateway's database (running or not)."""
    target = Path(args.file).expanduser()
    source = paths.db_file
    size = source.stat().st_size if source.exists() else 0
    progress = _Progress(size) if size >= PROGRESS_BYTES and not args.json else None
    running = live_lock(paths)
    try:
        result = backup(source, target, force=args.force, progress=progress)
    except BackupError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILURE
    key = _key_report(result.path, paths.secrets_key_file)
    data: dict[str, Any] = {
        "file": str(result.path.absolute()),
        "source": str(source),
        "bytes": result.bytes,
        "pages": result.pages,
        "integrity": result.integrity,
        "seconds": round(result.seconds, 3),
        "gatewayRunning": running is not None,
        "mode": "0600",
        **key,
    }
    if args.json:
        _print_json(data)
        return EXIT_OK
    what = f"the running gateway's database (pid {running.pid})" if running else "the database"
    _say(f"backed up {what} to {data['file']}: {result.bytes / _MIB:.1f} MiB, integrity ok, mode 0600")
    _say(f"secrets key: NOT inside this backup; it is {paths.secrets_key_file}")
    if key["keyOpens"] is False:
        _say(f"  warning: {key.get('keyProblem') or 'that key does not open the sealed secrets of the backup'}")
    _say("  copy the key file with the backup and keep it as safe: the backup's secrets open only with it,")
    _say("  and whoever has both has every connector token and API key stored in the gateway")
    return EXIT_OK


def run_restore(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    """`gateway restore FILE`: replace the database with a checked backup, keeping the old one; refused while a
    gateway runs on this config."""
    source = Path(args.file).expanduser()
    key_source = Path(args.key).expanduser() if args.key else None
    if not source.is_file():
        _say(f"error: there is no backup file at {source}")
        return EXIT_FAILURE
    try:
        # Held for the restore: a gateway started meanwhile is refused instead of opening a half-moved file.
        lock = acquire(paths, argv=["restore", str(source)], version=__version__)
    except LockHeldError as exc:
        _say(
            f"error: a gateway is running on this config (pid {exc.info.pid}): `gateway stop` it, restore, "
            "then start it again; the database was not touched"
        )
        return EXIT_FAILURE
    try:
        return _restore_locked(args, paths, source, key_source)
    finally:
        lock.release()


def _restore_locked(args: argparse.Namespace, paths: Paths, source: Path, key_source: Path | None) -> int:
    try:
        verdict = check_file(source)
    except BackupError as exc:
        _say(f"error: {exc}; nothing was restored")
        return EXIT_FAILURE
    if verdict != "ok":
        _say(f"error: {source} fails its integrity check ({verdict[:300]}); nothing was restored")
        return EXIT_FAILURE
    if not is_gateway_db(source):
        _say(f"error: {source} is an SQLite database but not a gateway's; nothing was restored")
        return EXIT_FAILURE
    key_file = key_source or paths.secrets_key_file
    try:
        opens = key_opens(source, key_file)
    except SecretsKeyError as exc:
        opens, problem = False, str(exc)
    else:
        problem = f"the key {key_file} does not open the backup's sealed secrets"
    if opens is False:
        hint = "" if key_source else ": pass --key with the secrets.key saved with this backup"
        _say(f"error: {problem}{hint}; nothing was restored")
        return EXIT_FAILURE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        kept = restore(source, paths.db_file, stamp=stamp)
        kept_key = install_key(key_source, paths.secrets_key_file, stamp=stamp) if key_source else None
    except (BackupError, SecretsKeyError, OSError) as exc:
        _say(f"error: the restore failed: {exc}")
        return EXIT_FAILURE
    data: dict[str, Any] = {
        "restored": str(source.absolute()),
        "database": str(paths.db_file),
        "integrity": verdict,
        "keptDatabase": str(kept) if kept else None,
        "keyFile": str(paths.secrets_key_file),
        "keptKey": str(kept_key) if kept_key else None,
    }
    if args.json:
        _print_json(data)
        return EXIT_OK
    _say(f"restored {source} to {paths.db_file} (integrity ok, mode 0600)")
    if kept:
        _say(f"  the database it replaced is kept as {kept}")
    if kept_key:
        _say(f"  the secrets key it replaced is kept as {kept_key}")
    _say("  start the gateway: `gateway start` (or `gateway service-start`)")
    return EXIT_OK
