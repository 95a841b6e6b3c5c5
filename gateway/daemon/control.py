"""Commands that act on a running gateway found through its lock file: status, stop, restart (logs: logread.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from gateway.config.file import Config, Paths, Server, secret_values, shorten_token
from gateway.daemon.jsonout import print_json
from gateway.daemon.launch import (
    EXIT_FAILURE,
    EXIT_OK,
    SIGNAL_RELOAD_TOKEN,
    self_command,
    spawn_detached,
    stop_timeout,
)
from gateway.daemon.lock import LockInfo, live_lock, lock_path, read_lock, remove_if_stale
from gateway.daemon.procs import process_environ, terminate
from gateway.daemon.term import Term, human_duration
from gateway.logs import redactor

EXIT_NOT_RUNNING = 3  # LSB "program is not running", for `gateway status`
_HTTP_TIMEOUT = 3.0
_START_WAIT = 60.0  # seconds a (re)started gateway gets to listen and answer /health (a loaded Pi is slow)


def identity_fingerprint(paths: Paths) -> str | None:
    """The E2E identity fingerprint clients pin, or None when the identity key cannot be read."""
    from gateway.ws import identity

    try:
        return identity.identity_fingerprint(paths)
    except (OSError, ValueError):
        return None


def read_token(config: Config, paths: Paths) -> str | None:
    """The gateway token from the config or the token file, never generating one."""
    if config.server.token:
        return config.server.token
    try:
        return paths.token_file.read_text().strip() or None
    except OSError:
        return None


def _count_sessions(paths: Paths) -> int | None:
    if not paths.db_file.exists():
        return None
    try:
        # Read-only, so a status check never writes to (or creates) the gateway's database.
        with sqlite3.connect(f"{paths.db_file.as_uri()}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    except sqlite3.Error:
        return None


def collect_status(config: Config, paths: Paths) -> dict[str, Any]:
    """Everything `gateway status` shows, as plain data: from the lock, `/health` and `/api/status` when present."""
    token = read_token(config, paths)
    out: dict[str, Any] = {
        "running": False,
        "configPath": str(paths.config_file),
        "lockFile": str(lock_path(paths)),
        "token": shorten_token(token) if token else None,
        "identity": identity_fingerprint(paths),
    }
    held = read_lock(lock_path(paths))
    info = live_lock(paths)
    if info is None:
        if held is not None:
            out["staleLock"] = {"pid": held.pid, "createdAt": held.created_at}
        return out
    url = info.url.replace("//0.0.0.0:", "//localhost:").replace("//[::]:", "//localhost:") if info.url else None
    out.update(running=True, pid=info.pid, port=info.port, url=url, version=info.version)
    out["supervisor"] = info.supervisor
    out["sessions"] = _count_sessions(paths)
    if not info.url:
        out["healthy"] = False
        out["note"] = "starting (not listening yet)"
        return out
    try:
        with httpx.Client(base_url=reachable_url(info.url), timeout=_HTTP_TIMEOUT) as client:
            health = client.get("/health")
            out["healthy"] = health.status_code == 200
            if health.status_code in (200, 503):
                body = health.json()
                out.update(uptime=body.get("uptime"), connections=body.get("connections"))
                if body.get("status") == "degraded":  # serving, but storage refuses writes: say why
                    out["note"] = f"degraded: {body.get('reason', '')}"
            if token:
                api = client.get("/api/status", headers={"Authorization": f"Bearer {token}"})
                if api.status_code in (200, 503):
                    body = api.json()
                    if api.status_code == 503:  # a service in error: the report is in the error's details
                        body = body.get("error", {}).get("details") or {}
                    if isinstance(body.get("services"), list):
                        out["services"] = body["services"]
                    if isinstance(body.get("sessions"), int):
                        out["sessions"] = body["sessions"]
                elif api.status_code == 401:
                    out["note"] = (
                        "the gateway refuses the token file's token (edited by hand? `gateway restart` applies it)"
                    )
    except (httpx.HTTPError, ValueError) as exc:
        out["healthy"] = False
        out["note"] = f"not answering on {info.url}: {exc.__class__.__name__}"
    if out.get("uptime") is None:
        out["uptime"] = _age(info)
    return out


def reachable_url(url: str) -> str:
    """The URL to connect to: a wildcard bind (0.0.0.0, ::) is reached through loopback."""
    return url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


def _age(info: LockInfo) -> float | None:
    try:
        created = datetime.fromisoformat(info.created_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (datetime.now(UTC) - created).total_seconds()


def print_status(status: dict[str, Any], term: Term) -> None:
    if not status["running"]:
        term.error("gateway is not running")
        term.field("config", status["configPath"])
        if "staleLock" in status:
            stale = status["staleLock"]
            term.field("stale lock", f"pid {stale['pid']} is gone (a crash?); the next start replaces it")
        term.line()
        term.hint("gateway serve", "start it in the foreground")
        term.hint("gateway service-start", "start the installed service")
        return
    if status.get("healthy"):
        term.ok("gateway is running")
    else:
        term.warn(f"gateway process is running but not healthy: {status.get('note', '')}")
    term.field("pid", status["pid"])
    term.field("port", status.get("port"))
    term.field("url", status.get("url"))
    if status.get("uptime") is not None:
        term.field("uptime", human_duration(status["uptime"]))
    term.field("token", status.get("token") or "none yet")
    if status.get("connections") is not None:
        term.field("connections", status["connections"])
    if status.get("sessions") is not None:
        term.field("sessions", status["sessions"])
    term.field("identity", status.get("identity") or "not configured")
    if status.get("supervisor"):
        term.field("service", status["supervisor"])
    for svc in status.get("services", []):
        if not isinstance(svc, dict):
            continue
        name = str(svc.get("service") or svc.get("name") or "?")
        state = str(svc.get("status", "?"))
        term.field(f"  {name}", term.style(state, "green" if state == "ok" else "red"))
        details = svc.get("details")
        if name == "connectors" and isinstance(details, dict):
            # Connector health: each connector's state, restarts and last error.
            for ref, info in sorted(details.items()):
                if ref == "_ingress" and isinstance(info, dict):
                    term.field("    ingress", _ingress_summary(info))
                elif isinstance(info, dict) and not ref.startswith("_"):
                    extra = f", {info['restarts']} restarts" if info.get("restarts") else ""
                    error = f", last error: {info['last_error']}" if info.get("last_error") else ""
                    term.field(f"    {ref}", f"{info.get('state', '?')}{extra}{error}")
        elif name == "sessions" and isinstance(details, dict):
            term.field("    in memory", _sessions_summary(details, status.get("sessions")))
    term.line()
    term.hint("gateway stop", "stop it")
    term.hint("gateway restart", "restart it")
    term.hint("gateway logs -f", "follow its log")


def _sessions_summary(details: dict[str, Any], stored: object) -> str:
    """Live and parked sessions (the `sessions` service of `/api/status`), and so the stored ones hibernated."""
    live, parked = details.get("live_sessions", 0), details.get("parked_sessions", 0)
    text = f"{live} live, {parked} parked"
    if isinstance(stored, int) and isinstance(live, int) and isinstance(parked, int):
        text += f", {max(0, stored - live - parked)} hibernated"
    return text


def _ingress_summary(info: dict[str, Any]) -> str:
    """The connectors' shared counters (`_ingress` in `/api/status`), in words: not a connector of its own."""
    return (
        f"{info.get('dispatched', 0)} events dispatched, {info.get('turns', 0)} turns run; "
        f"outbox: {info.get('outbox_delivered', 0)} delivered, {info.get('outbox_dead_letter', 0)} dead letters"
    )


def status(config: Config, paths: Paths, *, as_json: bool, term: Term) -> int:
    """`gateway status`: exit 0 when running, 3 when not."""
    for secret in [*secret_values(config), read_token(config, paths)]:
        redactor.add(secret)
    data = redactor.redact_data(collect_status(config, paths))  # the API redacts too; this covers the rest
    if as_json:
        print_json(data, stream=term.stream)
    else:
        print_status(data, term)
    return EXIT_OK if data["running"] else EXIT_NOT_RUNNING


def stop_wait(info: LockInfo, graceful_timeout: float) -> float:
    """Seconds `stop` gives the gateway after SIGTERM: its own graceful_timeout (from its lock; `graceful_timeout`,
    this config's, for a gateway too old to record it) plus its bound for the rest, plus margin."""
    return stop_timeout(info.graceful_timeout if info.graceful_timeout is not None else graceful_timeout)


def stop(
    paths: Paths,
    *,
    force: bool,
    timeout_ms: int | None,
    term: Term,
    graceful_timeout: float = Server().graceful_timeout,
) -> int:
    """`gateway stop`: SIGTERM, wait for the drain (or `timeout_ms`), then SIGKILL (at once with `force`); idempotent.

    Blocks until the process is gone: by default up to the gateway's graceful_timeout + 5 s, then 5 s after SIGKILL.
    """
    info = live_lock(paths)
    if info is None:
        removed = remove_if_stale(paths)
        term.line("gateway is not running" + (" (removed a stale lock)" if removed else ""))
        return EXIT_OK
    wait = timeout_ms / 1000 if timeout_ms is not None else stop_wait(info, graceful_timeout)
    if not force:
        term.line(f"stopping pid {info.pid}: SIGTERM, then up to {wait:g} s to finish what is in flight")
    try:
        result = terminate([info.pid], grace=wait, force=force)
    except PermissionError:
        term.error(f"not allowed to signal pid {info.pid}; run `gateway stop` as the user that started it")
        return EXIT_FAILURE
    if result.survivors:
        term.error(f"pid {info.pid} survived SIGKILL")
        return EXIT_FAILURE
    remove_if_stale(paths)  # after SIGKILL the process could not release its lock
    if result.killed and not force:
        term.warn(f"pid {info.pid} did not stop within {round(wait * 1000)} ms: killed (SIGKILL)")
    else:
        term.ok(f"gateway stopped (pid {info.pid}{', SIGKILL' if force else ''})")
    return EXIT_OK


def wait_serving(paths: Paths, *, old: LockInfo | None, timeout: float) -> LockInfo | None:
    """Poll (bounded) until a gateway other than `old` holds the lock and answers `/health` with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = live_lock(paths)
        fresh = info is not None and (old is None or (info.pid, info.created_at) != (old.pid, old.created_at))
        if info is not None and fresh and info.url:
            try:
                if httpx.get(f"{reachable_url(info.url)}/health", timeout=1.0).status_code == 200:
                    return info
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    return None


def restart(
    paths: Paths,
    *,
    force: bool,
    timeout_ms: int | None,
    term: Term,
    graceful_timeout: float = Server().graceful_timeout,
    start_if_stopped: bool = False,
) -> int:
    """`gateway restart`: SIGUSR1 when the gateway allows it (same port, same data), else stop and start detached.

    The new process gets the environment the old one was started with (read from /proc/<pid>/environ, so the
    `GATEWAY_*` settings and any key among them carry over without being written anywhere). With nothing running
    it says so and returns 3, unless `start_if_stopped`.
    """
    info = live_lock(paths)
    if info is None and not start_if_stopped:
        term.error("gateway is not running: nothing to restart")
        term.field("config", str(paths.config_file))
        term.line()
        term.hint("gateway serve", "start it in the foreground")
        term.hint("gateway restart --start-if-stopped", "start it in the background")
        return EXIT_NOT_RUNNING
    drain = stop_wait(info, graceful_timeout) if info is not None else 0.0
    if info is not None and info.sigusr1 and not force:
        os.kill(info.pid, signal.SIGUSR1)
        term.line(f"sent SIGUSR1 to pid {info.pid}: graceful restart")
    else:
        if info is not None and info.supervisor and not force:
            term.error(
                f"the gateway runs under {info.supervisor} without SIGUSR1 restarts; "
                "restart the service there (`systemctl --user restart gateway`) or use `gateway restart --force`"
            )
            return EXIT_FAILURE
        argv = info.argv if info is not None and info.argv else [*self_command(), "serve"]
        if "--config" not in argv:
            argv = [*argv, "--config", str(paths.config_file)]
        env: dict[str, str] | None = None  # nothing ran before: this shell's environment
        if info is not None:
            env = process_environ(info.pid)
            code = stop(paths, force=force, timeout_ms=timeout_ms, term=term, graceful_timeout=graceful_timeout)
            if code != EXIT_OK:
                return code
            if env is None:
                term.warn(f"cannot read the environment of pid {info.pid}; the new gateway gets this shell's")
        pid = spawn_detached(argv, paths.log_file, env)
        term.line(f"started pid {pid} in the background (logs: {paths.log_file})")
    # The old gateway drains first (SIGUSR1), then the new one starts: opening the database can take a while.
    limit = drain + _START_WAIT
    new = wait_serving(paths, old=info, timeout=limit)
    if new is None:
        term.error(f"the gateway did not come back within {limit:.0f} s; see `gateway logs`")
        return EXIT_FAILURE
    term.ok(f"gateway running again (pid {new.pid}) on {new.url}")
    return EXIT_OK


def _accepted(info: LockInfo, token: str) -> bool:
    if not info.url:
        return False
    try:
        r = httpx.get(
            f"{reachable_url(info.url)}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=_HTTP_TIMEOUT
        )
    except httpx.HTTPError:
        return False
    return r.status_code != 401  # 200, or 503 with a report: either way the token was taken


def apply_token(paths: Paths, token: str, term: Term, *, timeout: float = 20.0) -> bool:
    """After the token file changed: make the running gateway use `token` now (SIGUSR2), or say what to do.

    Returns False when a running gateway still refuses the new token. Blocks up to `timeout` seconds.
    """
    info = live_lock(paths)
    if info is None:
        term.line("the gateway is not running; it will use the new token when it starts")
        return True
    if not info.reload_token:
        term.warn(f"the running gateway (pid {info.pid}) still uses the old token: `gateway restart` applies it")
        return False
    if (process_environ(info.pid) or {}).get("GATEWAY_SERVER_TOKEN"):
        term.warn(
            f"the running gateway (pid {info.pid}) takes its token from GATEWAY_SERVER_TOKEN in its environment, "
            "not from the token file; to change it, stop the gateway and start it with the new value "
            "(`gateway restart` keeps the environment)"
        )
        return False
    try:
        os.kill(info.pid, SIGNAL_RELOAD_TOKEN)
    except OSError as exc:
        term.warn(f"cannot tell pid {info.pid} to read the new token ({exc.strerror}): `gateway restart` applies it")
        return False
    deadline = time.monotonic() + timeout
    while not _accepted(info, token):
        if time.monotonic() > deadline:
            term.warn(
                f"the running gateway (pid {info.pid}) does not accept the new token (is server.token set in its "
                "config or environment? see `gateway logs`); `gateway restart` applies the token file"
            )
            return False
        time.sleep(0.05)
    term.ok(f"the running gateway (pid {info.pid}) uses the new token now; the old one no longer works")
    return True
