"""`gateway secrets rotate-key`: re-seal the database's secrets with a new key, the gateway stopped."""

from __future__ import annotations

import sys

from gateway import __version__
from gateway.config.file import Config, Paths
from gateway.daemon.lock import LockHeldError, acquire
from storage.db import StorageError, open_db
from storage.sealing import SecretsKeyError, rotate_key

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 78


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rotate(config: Config, paths: Paths) -> int:
    """Rotate the secrets key; refused while a gateway runs on this config (it holds the old key in memory)."""
    if not paths.db_file.exists():
        _say(f"error: there is no database at {paths.db_file} yet: nothing is sealed, nothing to rotate")
        return EXIT_FAILURE
    try:
        # Held for the rotation: a gateway started meanwhile waits for nothing, it is refused.
        lock = acquire(paths, argv=["secrets", "rotate-key"], version=__version__)
    except LockHeldError as exc:
        _say(f"error: a gateway is running on this config (pid {exc.info.pid}); `gateway stop` it, rotate, start it")
        return EXIT_FAILURE
    try:
        conn = open_db(paths.db_file, synchronous=config.storage.synchronous, key_file=paths.secrets_key_file)
        try:
            n = rotate_key(conn, paths.secrets_key_file)
        finally:
            conn.close()
    except (SecretsKeyError, StorageError) as exc:
        _say(f"error: {exc}")
        return EXIT_CONFIG
    finally:
        lock.release()
    _say(f"secrets key rotated: {n} sealed value(s) re-sealed with a new {paths.secrets_key_file}")
    _say(f"  back it up with {paths.db_file}: the database's secrets open only with it")
    return EXIT_OK
