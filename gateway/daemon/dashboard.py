"""`gateway dashboard`: print a link that signs the owner in to the web UI, once, within 5 minutes.

The code is made here, on the machine, straight in the database (as `gateway user` writes it, whether the gateway
runs or not); the running gateway trades it for the gateway token at `POST /api/auth/owner-link` when the web UI
opens the link. The link names where the gateway really listens (its lock file), else where the config says.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from gateway.config.file import Config, Paths
from gateway.daemon.jsonout import add_json_flag, print_json
from gateway.daemon.lock import live_lock
from storage import login_links
from storage.clock import now_ms
from storage.db import open_db

EXIT_OK = 0
EXIT_USAGE = 2
LINK_TTL = 300  # seconds: long enough to click, short enough that a link in a scrollback or history is dead


def base_url(config: Config, paths: Paths) -> tuple[str, bool]:
    """Where a browser on this machine reaches the gateway, and whether it is running now."""
    from gateway.daemon.control import reachable_url  # here: every command builds the parser that imports this module

    held = live_lock(paths)
    if held is not None and held.url:
        return reachable_url(held.url).rstrip("/"), True
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{config.server.port}", False


def make_link(config: Config, paths: Paths, base: str) -> tuple[str, int]:
    """Store a fresh single-use code and return the link and when it expires (ms)."""
    ts = now_ms()
    expires_at = ts + LINK_TTL * 1000
    conn = open_db(paths.db_file, synchronous=config.storage.synchronous, key_file=paths.secrets_key_file)
    try:
        conn.execute("BEGIN IMMEDIATE")
        code = login_links.create_login_link(conn, expires_at=expires_at, now_ms=ts)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return f"{base.rstrip('/')}/#/signin/{code}", expires_at


def run(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    """The link on stdout (a script can open it), what it is on stderr."""
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            why = "give the web UI's address, e.g. https://gw.example.org/"
            print(f"error: --url {args.url!r}: {why}", file=sys.stderr)
            return EXIT_USAGE
        base, running = args.url, live_lock(paths) is not None
    else:
        base, running = base_url(config, paths)
    link, expires_at = make_link(config, paths, base)
    if args.json:
        print_json({"url": link, "expires_at": expires_at, "running": running}, redact=False)
        return EXIT_OK
    print(link, flush=True)
    say = sys.stderr
    print(f"opens the web UI signed in as the owner; it works once, within {LINK_TTL // 60} minutes", file=say)
    if not running:
        print("the gateway is not running: start it (`gateway serve`) before you open the link", file=say)
    return EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json_flag(parser, "print the link, when it expires (ms since the epoch) and whether the gateway runs as JSON")
    parser.add_argument(
        "--url",
        help="the web UI's address as your browser reaches it (a reverse proxy, another machine's name); "
        "default: where this gateway listens",
    )
