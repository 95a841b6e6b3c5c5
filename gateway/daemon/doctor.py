"""`gateway doctor`: one line per check of what a running gateway needs, each with its fix; exit 1 on a failure."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec

from gateway.config.file import Config, ConfigError, Paths
from gateway.daemon.lock import LockInfo, live_lock

EXIT_OK, EXIT_FAILURE = 0, 1
Status = Literal["ok", "warn", "fail"]
_HTTP_TIMEOUT = 3.0
_MAX_WALK = 5000  # files looked at for their modes: uploads can be many; the first offenders are what matters
_WARN_DISK_FACTOR = 4  # free space under this many times storage.min_free_disk_mb is a warning
_CLOCK_SKEW = 300.0  # seconds between our clock and a provider's Date header worth a warning
_FIRST_YEAR = 2025  # a clock before this (a Pi without its network time yet) breaks TLS and JWT expiry


class Check(msgspec.Struct, frozen=True):
    name: str
    status: Status
    detail: str
    fix: str = ""


class _Seen(msgspec.Struct):
    """What one check learned that a later one uses: the provider's clock, the running gateway."""

    server_date: float | None = None
    running: LockInfo | None = None


def run(args: argparse.Namespace, load: Callable[[], tuple[Config, Paths]]) -> int:
    """Run every check, print them (or JSON with `--json`); exit 0 when none failed, 1 otherwise."""
    from gateway.logs import redactor

    # Every text leaves through the redaction (an upstream error may echo a key back).
    checks = [Check(c.name, c.status, redactor.redact(c.detail), redactor.redact(c.fix)) for c in collect(load)]
    ok = all(c.status != "fail" for c in checks)
    if args.json:
        data = {"ok": ok, "checks": [msgspec.structs.asdict(c) for c in checks]}
        print(msgspec.json.format(msgspec.json.encode(data)).decode(), flush=True)
    else:
        _print(checks)
    return EXIT_OK if ok else EXIT_FAILURE


def _print(checks: list[Check]) -> None:
    from gateway.daemon.term import Term

    term = Term(sys.stdout)
    colours = {"ok": "green", "warn": "yellow", "fail": "red"}
    width = max(len(c.name) for c in checks)
    for c in checks:
        label = term.style(c.status.upper().ljust(4), colours[c.status], "bold")
        fix = term.style(f"  fix: {c.fix}", "dim") if c.fix and c.status != "ok" else ""
        term.line(f"{label}  {c.name.ljust(width)}  {c.detail}{fix}")


def collect(load: Callable[[], tuple[Config, Paths]]) -> Iterator[Check]:
    """Every check in order; a config that does not load leaves only the checks that need none."""
    seen = _Seen()
    try:
        config, paths = load()
    except ConfigError as exc:
        yield Check("config", "fail", str(exc), "correct the setting it names (`gateway config` shows the rest)")
        yield check_clock(seen)
        yield check_open_files(Config())
        return
    from gateway.config.file import secret_values
    from gateway.logs import redactor

    for secret in secret_values(config):
        redactor.add(secret)
    yield Check("config", "ok", f"{paths.config_file} loads and is valid" if paths.config_file.exists() else (
        f"no file at {paths.config_file}: the defaults are valid"))  # fmt: skip
    seen.running = live_lock(paths)
    yield check_port(config, seen.running)
    yield check_data_dir(paths)
    yield check_disk(config, paths)
    yield check_database(paths)
    yield check_provider(config, paths, seen)
    yield from check_connectors(config, paths, seen.running)
    yield check_clock(seen)
    yield check_open_files(config)


def check_port(config: Config, running: LockInfo | None) -> Check:
    host, port = config.server.host, config.server.port
    if port == 0:
        return Check("port", "ok", "server.port = 0: the system picks a free port at each start")
    if running is not None and running.port == port:
        return Check("port", "ok", f"{host}:{port} is this gateway's (pid {running.pid})")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
            s.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            from gateway.daemon.procs import listening_pids

            pids = sorted(listening_pids(port))
            who = f" by pid {', '.join(map(str, pids))}" if pids else " by another process"
            return Check(
                "port", "fail", f"{host}:{port} is in use{who}",
                "stop that process (`gateway serve --force` does), or set [server] port to a free one",
            )  # fmt: skip
        if exc.errno == errno.EACCES:
            return Check("port", "fail", f"{host}:{port} needs privileges", "use a port above 1023")
        return Check("port", "fail", f"cannot bind {host}:{port}: {exc.strerror}", "set [server] host to an address of "
                     "this machine (127.0.0.1, 0.0.0.0)")  # fmt: skip
    return Check("port", "ok", f"{host}:{port} is free")


def _loose(mode: int) -> bool:
    return bool(mode & 0o077)


def _walk(root: Path, skip: set[Path]) -> Iterator[Path]:
    """Files and folders under `root` (not following links), at most _MAX_WALK of them."""
    n = 0
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in [*dirs, *files]:
            n += 1
            if n > _MAX_WALK:
                return
            yield here / name


def check_data_dir(paths: Paths) -> Check:
    data = paths.data_dir
    if not data.exists():
        return Check("data dir", "warn", f"{data} does not exist yet", "`gateway start` creates it (0700)")
    mode = data.stat().st_mode & 0o777
    if _loose(mode):
        return Check("data dir", "fail", f"{data} is {mode:04o}: other users can look inside", f"chmod 700 {data}")
    # The workspace is the agent's and the user's own folder: its modes are theirs to choose.
    loose: list[str] = []
    for path in _walk(data, {paths.workspace}):
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISLNK(st.st_mode) and _loose(st.st_mode):
            loose.append(f"{path.relative_to(data)} {st.st_mode & 0o777:04o}")
    if paths.log_file.parent != data / "logs" and paths.log_file.exists():
        log_mode = paths.log_file.stat().st_mode & 0o777
        if _loose(log_mode):
            loose.append(f"{paths.log_file} {log_mode:04o}")
    if loose:
        shown = ", ".join(loose[:4]) + (f" and {len(loose) - 4} more" if len(loose) > 4 else "")
        return Check("data dir", "fail", f"readable by others: {shown}", f"chmod -R go-rwx {data}")
    db = paths.db_file
    present = [p.name for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()]
    files = f" ({', '.join(present)} 0600)" if present else ""
    return Check("data dir", "ok", f"{data} is 0700, every file in it private{files}")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(config: Config, paths: Paths) -> Check:
    where = _existing_parent(paths.data_dir)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check("disk", "fail", f"cannot see the free space of {where}: {exc.strerror}", "check the mount")
    free_mb = usage.free // (1024 * 1024)
    least = config.storage.min_free_disk_mb
    detail = f"{free_mb} MiB free on {where} ({100 * usage.free // max(usage.total, 1)} %)"
    if free_mb < least:
        return Check("disk", "fail", f"{detail}, below storage.min_free_disk_mb = {least}", "free some space")
    if free_mb < least * _WARN_DISK_FACTOR:
        return Check("disk", "warn", f"{detail}, close to storage.min_free_disk_mb = {least}", "free some space")
    return Check("disk", "ok", detail)


def check_database(paths: Paths) -> Check:
    from storage.backup import BackupError, check_live

    db = paths.db_file
    if not db.exists():
        return Check("database", "warn", f"{db} does not exist yet", "`gateway start` creates it")
    try:
        verdict = check_live(db, quick=True)
    except BackupError as exc:
        verdict = str(exc)
    if verdict != "ok":
        return Check(
            "database", "fail", f"{db} fails its quick_check: {verdict[:300]}",
            "stop the gateway and `gateway restore` your last backup",
        )  # fmt: skip
    return Check("database", "ok", f"{db} passes quick_check ({db.stat().st_size / (1024 * 1024):.1f} MiB)")


class _Llm(msgspec.Struct, frozen=True):
    """The provider a turn would use: the config file's, overridden by what `POST /api/app-config/llm` stored."""

    provider: str
    base_url: str
    api_key: str
    stored: bool = False


def effective_llm(config: Config, paths: Paths) -> _Llm:
    """The config's provider settings with the database's stored overrides applied (read-only; the file's
    settings when the database or its key cannot be read)."""
    import sqlite3

    from gateway.agent.live_config import API_KEY_SLOT, LLM_KEY, LlmSettings
    from gateway.logs import redactor
    from storage import secrets as secrets_db
    from storage import settings as settings_db
    from storage.db import open_reader
    from storage.sealing import Sealer, SecretsKeyError, read_key

    o = config.providers.openai
    llm = _Llm(config.agent.provider, o.base_url, o.api_key)
    if not paths.db_file.exists():
        return llm
    try:
        key = read_key(paths.secrets_key_file)
        conn = open_reader(paths.db_file, sealer=Sealer(key) if key else None)
        try:
            doc = settings_db.get_setting(conn, LLM_KEY)
            api_key = secrets_db.get_secret(conn, API_KEY_SLOT) if key else None
            redactor.add(api_key)
        finally:
            conn.close()
        stored = msgspec.json.decode(doc, type=LlmSettings) if doc else None
    except (sqlite3.Error, SecretsKeyError, OSError, msgspec.DecodeError):
        return llm
    if stored is None and not api_key:
        return llm
    return _Llm(
        (stored and stored.provider) or llm.provider,
        (stored and stored.base_url) or llm.base_url,
        api_key or llm.api_key,
        stored=True,
    )


def check_provider(config: Config, paths: Paths, seen: _Seen) -> Check:
    llm = effective_llm(config, paths)
    name = llm.provider
    if name == "echo":
        return Check("provider", "ok", "echo (built in, always reachable)")
    if name == "cli":
        argv = config.providers.cli.argv
        if not argv:
            return Check("provider", "fail", "cli: providers.cli.argv is empty", "set [providers.cli] argv")
        found = shutil.which(argv[0])
        if found is None:
            return Check("provider", "fail", f"cli: {argv[0]} is not found", "install it or give its full path")
        return Check("provider", "ok", f"cli: {found}")
    return _check_openai(llm, seen)


def _check_openai(llm: _Llm, seen: _Seen) -> Check:
    base_url = llm.base_url
    url = base_url.rstrip("/") + "/models"
    where = "openai (set over the API)" if llm.stored else "openai"
    headers = {"Authorization": f"Bearer {llm.api_key}"} if llm.api_key else {}
    try:
        with httpx.Client(timeout=_HTTP_TIMEOUT, follow_redirects=False) as client:
            response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Check(
            "provider", "fail", f"{where}: {base_url} is unreachable ({exc.__class__.__name__})",
            "check the base URL (GET /api/app-config/llm, providers.openai.base_url) and that the server is up",
        )  # fmt: skip
    date = response.headers.get("date")
    if date:
        try:
            seen.server_date = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            pass
    code = response.status_code
    if code in (401, 403):
        return Check("provider", "fail", f"{where}: {base_url} refuses the API key (HTTP {code})",
                     "set a valid key (POST /api/app-config/llm, or providers.openai.api_key)")  # fmt: skip
    if code >= 500:
        return Check("provider", "warn", f"{where}: {base_url} answers HTTP {code}", "the provider has trouble")
    return Check("provider", "ok", f"{where}: {base_url} answers (HTTP {code})")


def check_connectors(config: Config, paths: Paths, running: LockInfo | None) -> Iterator[Check]:
    if running is not None:
        health = _running_health(config, paths)
        if health is not None:
            if not health:
                yield Check("connectors", "ok", "none configured")
            for ref, info in sorted(health.items()):
                yield _connector_check(ref, info)
            return
    configured = sorted(f"{kind}/{name}" for kind, names in config.connectors.items() for name in names)
    stored = _stored_connectors(paths)
    refs = sorted({*configured, *stored})
    if not refs:
        yield Check("connectors", "ok", "none configured")
        return
    why = "the gateway is not running" if running is None else "the running gateway did not report"
    for ref in refs:
        yield Check(f"connector {ref}", "ok", f"configured; its health is known once it runs ({why})")


def _running_health(config: Config, paths: Paths) -> dict[str, dict[str, Any]] | None:
    from gateway.daemon.control import collect_status

    status = collect_status(config, paths)
    for svc in status.get("services") or []:
        if isinstance(svc, dict) and (svc.get("service") or svc.get("name")) == "connectors":
            details = svc.get("details")
            if isinstance(details, dict):
                return {k: v for k, v in details.items() if not k.startswith("_") and isinstance(v, dict)}
    return None


def _connector_check(ref: str, info: dict[str, Any]) -> Check:
    state = str(info.get("state", "?"))
    error = f"; last error: {info['last_error']}" if info.get("last_error") else ""
    restarts = f", {info['restarts']} restarts" if info.get("restarts") else ""
    detail = f"{state}{restarts}{error}"
    if state == "running":
        return Check(f"connector {ref}", "ok", detail)
    fix = "`gateway logs` shows why; `gateway status` shows its last error and restarts"
    return Check(f"connector {ref}", "fail" if state == "failed" else "warn", detail, fix)


def _stored_connectors(paths: Paths) -> list[str]:
    """Connectors made over the API (kept in the database), read without writing to it."""
    import sqlite3

    if not paths.db_file.exists():
        return []
    try:
        with sqlite3.connect(f"{paths.db_file.absolute().as_uri()}?mode=ro", uri=True, timeout=2) as conn:
            rows = conn.execute("SELECT kind, name FROM connectors").fetchall()
    except sqlite3.Error:
        return []
    return [f"{kind}/{name}" for kind, name in rows]


def check_clock(seen: _Seen) -> Check:
    now = time.time()
    year = time.gmtime(now).tm_year
    if not _FIRST_YEAR <= year < 2100:
        return Check("clock", "fail", f"the clock says {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))} UTC",
                     "set the time (`sudo timedatectl set-ntp true`)")  # fmt: skip
    if seen.server_date is not None and abs(now - seen.server_date) > _CLOCK_SKEW:
        skew = now - seen.server_date
        return Check("clock", "warn", f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the provider's clock",
                     "enable network time (`sudo timedatectl set-ntp true`)")  # fmt: skip
    checked = ", agrees with the provider's" if seen.server_date is not None else ""
    return Check("clock", "ok", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC{checked}")


def check_open_files(config: Config) -> Check:
    from gateway.daemon.fdlimit import RESERVED, cap_for

    try:
        import resource
    except ImportError:
        return Check("open files", "ok", "no limit on this system")
    wanted = config.ws.max_connections + RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    shown = f"soft {'unlimited' if soft == inf else soft}, hard {'unlimited' if hard == inf else hard}"
    if soft == inf or soft >= wanted:
        return Check("open files", "ok", f"{shown}; ws.max_connections = {config.ws.max_connections} needs {wanted}")
    if hard == inf or hard >= wanted:
        return Check("open files", "ok", f"{shown}; the gateway raises the soft limit to {wanted} at start")
    cap = cap_for(hard)
    return Check(
        "open files", "warn",
        f"{shown}: too low for ws.max_connections = {config.ws.max_connections}; it is lowered to {cap} at start",
        f"raise the hard limit to {wanted} (LimitNOFILE= in the service unit, or /etc/security/limits.conf)",
    )  # fmt: skip
