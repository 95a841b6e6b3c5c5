"""The serve run loop: free the port (--force), take the lock, serve until a signal, shut down, exit or respawn."""

from __future__ import annotations

import ctypes
import errno
import gc
import hmac
import logging
import os
import signal
import sys
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import msgspec
import trio

from actors.store import StorageUnavailableError
from gateway import __version__
from gateway.config.file import (
    Config,
    ConfigError,
    Paths,
    check_token,
    ensure_token,
    is_loopback,
    make_private_dir,
    shorten_token,
)
from gateway.daemon.launch import (
    ENV_ALLOW_SIGUSR1,
    ENV_DETACHED,
    ENV_NO_RESPAWN,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_RESTART,
    FORCE_GRACE,
    SIGNAL_RELOAD_TOKEN,
    env_flag,
    respawn_argv,
    spawn_detached,
    stop_timeout,
    supervisor_name,
    zipapp_path,
)
from gateway.daemon.lock import GatewayLock, LockHeldError, acquire, live_lock
from gateway.daemon.procs import free_port, terminate
from gateway.logs import redactor, setup_logging
from storage.db import release_cache
from storage.sealing import SecretsKeyError

if TYPE_CHECKING:
    from types import FrameType

    from gateway.core import Runtime

log = logging.getLogger("gateway.daemon")

Loader = Callable[[], tuple[Config, Paths]]


def forget_the_archive() -> None:
    """Under shiv, let go of what its bootstrap keeps of the .pyz once it has started us from the extracted folder.

    Run under shiv's own bootstrap (a `SHIV_*` setting, see scripts/zipapp_main.py), shiv's archive's table of
    contents (~2,400 files) stays in memory twice, ~2 MiB in all: in the `zipfile.ZipFile` that `bootstrap()` holds
    in a local variable for the whole run, and in zipimport's cache, as the .pyz stays first on `sys.path`. Nothing
    is imported from the archive after the bootstrap (every module comes from the extracted site-packages), so both
    go: the closed ZipFile's lists are emptied and the .pyz leaves `sys.path`. (A plain start runs from an archive
    of two entries, shiv's archive stored whole beside our `__main__.py`, and opens no ZipFile: little to let go.)
    """
    pyz = zipapp_path()
    if pyz is None:
        return
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        archive = frame.f_locals.get("archive") if frame.f_code.co_name == "bootstrap" else None
        if isinstance(archive, zipfile.ZipFile) and archive.fp is None:
            archive.filelist.clear()
            archive.NameToInfo.clear()
        frame = frame.f_back
    ours = [p for p in sys.path if p and Path(p).resolve() == pyz]
    sys.path[:] = [p for p in sys.path if p not in ours]
    for key in [k for k in sys.path_importer_cache if any(k == p or k.startswith(p + os.sep) for p in ours)]:
        del sys.path_importer_cache[key]
    import zipimport

    cache = getattr(zipimport, "_zip_directory_cache", {})
    for p in ours:
        cache.pop(p, None)


class Outcome(msgspec.Struct):
    """How one serving round ended: the signal that ended it (None if the server stopped by itself)."""

    signum: int | None = None
    serving: bool = False  # became true once listening: an OSError after that is not a bind failure


def _port_of(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


async def serve_once(
    config: Config, paths: Paths, token: str, lock: GatewayLock, *, allow_usr1: bool, outcome: Outcome | None = None
) -> Outcome:
    """Serve until SIGINT/SIGTERM (or SIGUSR1 when allowed), then shut down within graceful_timeout (+1 s).

    The lock is updated with the bound port and URL once serving. Errors of the runtime propagate.
    """
    # Imported here, not at the top: `gateway status`/`stop` import this module and need none of the server stack.
    from gateway import runtime

    outcome = Outcome() if outcome is None else outcome
    shutdown = trio.Event()
    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if allow_usr1 else [])

    def on_signal(signum: int) -> None:
        outcome.signum = signum

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(runtime.watch_signals, shutdown, on_signal=on_signal, signals=signals))

        async def serve(task_status: trio.TaskStatus[Runtime]) -> None:
            try:
                await runtime.run(config, paths, token=token, shutdown=shutdown, task_status=task_status)
            finally:
                nursery.cancel_scope.cancel("gateway stopped")

        rt: Runtime = await nursery.start(serve)
        await nursery.start(partial(reload_token_on_signal, rt, config, paths))
        url = rt.binds[0] if rt.binds else ""
        lock.update(port=_port_of(url), url=url, sigusr1=allow_usr1, reload_token=True)
        outcome.serving = True
        nursery.start_soon(tune_gc_once_started)
        nursery.start_soon(partial(collect_when_quiet, release=partial(give_memory_back, rt)))
        await shutdown.wait()
        # Hypercorn drains within graceful_timeout; this bounds the whole stop so a stuck task cannot hold the lock.
        nursery.cancel_scope.deadline = trio.current_time() + config.server.graceful_timeout + 1.0
    return outcome


GC_THRESHOLDS = (10_000, 10, 10)
# How long after the socket is bound the collector is tuned: its full collection (~10 ms with everything loaded)
# would otherwise hold the first requests, and what start-up made is all there by then.
GC_SETTLE = 1.0


async def tune_gc_once_started(delay: float = GC_SETTLE) -> None:
    await trio.sleep(delay)
    tune_gc()


def tune_gc() -> None:
    """Once serving: what start-up built (modules, routes, actors, config) lives as long as the process, so it is
    frozen out of the collector's reach, and young collections run every 10 000 new container objects instead of
    700. A busy edge allocates thousands per request (a 100-event batch ~8 000): with the defaults, collections
    took 5-10 µs per ingress event, and each full one rescanned every object start-up had made (40-200 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# A full collection once the gateway goes quiet after at least this many young collections (30 000 new container
# objects: some hundred connections' worth), read every QUIET_PERIOD seconds; quiet is at most one young
# collection in the last period.
QUIET_AFTER_YOUNG = 3
QUIET_PERIOD = 1.0


def _young_collections() -> int:
    """Young collections (of generation 0 or 1) the process has run so far."""
    stats = gc.get_stats()
    return int(stats[0]["collections"]) + int(stats[1]["collections"])


def _young_since_full() -> int:
    """Young collections since the last full one, whoever ran it (start-up, the interpreter on its own, this
    collector): read from the interpreter's own counts, which a full collection zeroes."""
    _, since_middle, middle_since_full = gc.get_count()
    return middle_since_full * gc.get_threshold()[1] + since_middle


async def give_memory_back(rt: Runtime) -> None:
    """Once a burst is over: the store's SQLite page cache (up to 8 MB; it fills as the database grows) and the C
    allocator's free pages go back to the system."""
    try:
        await rt.store.call(release_cache)
    except StorageUnavailableError:
        return  # a stalled disk: the cache stays until the next quiet period
    trim_c_heap()


def trim_c_heap() -> None:
    """glibc's `malloc_trim(0)`: free pages inside the C heap go back to the system (a no-op where libc has none)."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


async def collect_when_quiet(
    period: float = QUIET_PERIOD,
    after: int = QUIET_AFTER_YOUNG,
    release: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run a full collection when a burst of work is over, never during it.

    With young collections every 10 000 new objects (tune_gc), garbage in reference cycles that lived as long as
    a connection (hypercorn's per-connection server, protocol and h11 state, ~28 objects each, a cycle through
    the bound `protocol_send`) reaches the oldest generation, whose collections are rare: after each burst of
    connections their memory stayed taken, and the next burst's peak landed on top of it (RSS after 10 rounds of
    1000 connections 1.23-1.35 x round 1; with this, about the default thresholds' figure). An idle process
    allocates too little to trigger even a young collection, so a burst's last cycles wait too. A collection while
    traffic flows would pause every request; this one waits for a period with at most one young collection."""
    seen = _young_collections()
    while True:
        await trio.sleep(period)
        now = _young_collections()
        if _young_since_full() >= after and now - seen <= 1:
            gc.collect()
            if release is not None:
                await release()
            now = _young_collections()
        seen = now


def reread_token(rt: Runtime, config: Config, paths: Paths) -> None:
    """Use the token file's token from the next request on (open `/ws` connections stay as they are).

    A token from the config or the environment (server.token) is not the file's to change; a missing or weak file
    keeps the current token. Either way the log says what happened.
    """
    if config.server.token:
        log.warning("token reload asked, but the token comes from server.token (config or environment): kept")
        return
    try:
        token = paths.token_file.read_text().strip()
        check_token(token, f"token file {paths.token_file}")
    except (OSError, ConfigError) as exc:
        log.warning("token reload: kept the current token: %s", exc)
        return
    if hmac.compare_digest(token.encode(), rt.token.encode()):
        log.info("token reload: the token file holds the token in use already")
        return
    redactor.add(token)
    rt.token = token
    log.info("token reloaded from %s", paths.token_file)


async def reload_token_on_signal(
    rt: Runtime, config: Config, paths: Paths, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """SIGUSR2 (sent by `gateway token --rotate` and `gateway install --token`): re-read the token file."""
    with trio.open_signal_receiver(SIGNAL_RELOAD_TOKEN) as received:
        task_status.started()
        async for _ in received:
            reread_token(rt, config, paths)


E = TypeVar("E", bound=BaseException)


def _find_error(exc: BaseException, kind: type[E]) -> E | None:
    """The first `kind` error in `exc` or the groups nurseries wrapped it in."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _find_error(sub, kind)
            if found is not None:
                return found
    return None


def _say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def _banner(config: Config, paths: Paths, token: str, generated: bool, detached: bool) -> None:
    _say(f"gateway {__version__} (pid {os.getpid()})")
    _say(f"  config:  {paths.config_file}{'' if paths.config_file.exists() else ' (not present: defaults)'}")
    _say(f"  data:    {paths.data_dir}")
    _say(f"  logs:    {paths.log_file}")
    if generated and not detached:
        _say(f"  token:   {token}   (new; saved to {paths.token_file})")
    else:
        src = "config" if config.server.token else str(paths.token_file)
        _say(f"  token:   {shorten_token(token)}   (from {src}; `gateway token` shows it)")
    if not is_loopback(config.server.host) and not config.server.allow_public:
        _say(
            f"  warning: listening on {config.server.host}, reachable from the network; "
            "set server.allow_public = true to silence this"
        )
    host = "localhost" if config.server.host in ("0.0.0.0", "::") else config.server.host
    if config.server.port:
        _say(f"  url:     http://{host}:{config.server.port}/")
    else:  # port 0: the system picks one when binding, named by the "listening on" line that follows
        _say("  url:     (port 0: the system picks a free one; the next line and `gateway status` name it)")


def _force_free(config: Config, paths: Paths) -> None:
    """`--force`: stop the live holder of this config's lock and whatever listens on the port (never by name)."""
    held = live_lock(paths)
    if held is not None and held.pid != os.getpid():
        # Our own gateway drains what it has in flight when asked to stop: give it that time, as `gateway stop`
        # does, before SIGKILL. 700 ms is for whatever else sits on the port.
        graceful = held.graceful_timeout if held.graceful_timeout is not None else config.server.graceful_timeout
        wait = stop_timeout(graceful)
        _say(f"  --force: stopping the gateway holding the lock (pid {held.pid}; up to {wait:g} s for its drain)")
        stopped = terminate([held.pid], grace=wait)
        if stopped.killed:
            _say(f"  --force: pid {held.pid} did not stop within {wait:g} s: killed (SIGKILL)")
    if config.server.port:
        stopped = free_port(config.server.port, grace=FORCE_GRACE)
        if stopped.signalled:
            pids = ", ".join(str(p) for p in sorted(stopped.signalled))
            killed = f" (SIGKILL: {', '.join(str(p) for p in sorted(stopped.killed))})" if stopped.killed else ""
            _say(f"  --force: stopped pid {pids} listening on port {config.server.port}{killed}")


def _check_data_dir(paths: Paths) -> int | None:
    """Make the data folder owner-only (returning the mode it had when it was looser, else None), and refuse to
    start, in one line, on a folder the gateway cannot write (a disk mounted read-only)."""
    from storage.db import probe_folder

    try:
        was = make_private_dir(paths.data_dir)
        probe_folder(paths.data_dir)
    except OSError as exc:
        raise ConfigError(
            f"the data folder {paths.data_dir} cannot be written ({exc.strerror}); "
            "make it writable, or set [storage] data_dir to a writable folder"
        ) from None
    return was


def serve(load: Loader, *, args: list[str], force: bool = False, env: Mapping[str, str] | None = None) -> int:
    """`gateway serve`: the run loop. Returns the process exit code; ConfigError propagates (exit 78 in the CLI)."""
    env = os.environ if env is None else env
    allow_usr1 = env_flag(env, ENV_ALLOW_SIGUSR1)
    detached = env_flag(env, ENV_DETACHED)
    supervisor = supervisor_name(env)
    # Between two serving rounds (and while stopping) nobody listens for it: ignored, it cannot kill us then.
    signal.signal(SIGNAL_RELOAD_TOKEN, signal.SIG_IGN)
    forget_the_archive()
    while True:
        config, paths = load()
        was = _check_data_dir(paths)
        setup_logging(
            level=config.log.level,
            fmt=config.log.format,
            file=paths.log_file,
            max_bytes=config.log.max_bytes,
            backups=config.log.backups,
            stderr=not detached,  # a detached child's stderr is the log file already
        )
        if was is not None:
            log.warning("the data folder %s was readable by others (%o): made it owner-only (700)", paths.data_dir, was)
        if force:
            _force_free(config, paths)
        try:
            lock = acquire(
                paths,
                argv=respawn_argv(args),
                version=__version__,
                supervisor=supervisor,
                graceful_timeout=config.server.graceful_timeout,
            )
        except LockHeldError as exc:
            where = f" on {exc.info.url}" if exc.info.url else ""
            _say(
                f"error: a gateway is already running with config {exc.info.config_path} (pid {exc.info.pid}{where}).\n"
                "  `gateway status` shows it, `gateway stop` stops it, `gateway serve --force` replaces it."
            )
            return EXIT_FAILURE
        try:
            token, generated = ensure_token(config, paths)
        except BaseException:
            lock.release()
            raise
        _banner(config, paths, token, generated, detached)
        outcome = Outcome()
        try:
            trio.run(partial(serve_once, config, paths, token, lock, allow_usr1=allow_usr1, outcome=outcome))
        except BaseException as exc:
            keyerr = _find_error(exc, SecretsKeyError)
            if keyerr is not None:  # a copied database without its key: say so in one line, never restart
                _say(f"error: {keyerr}")
                return EXIT_CONFIG
            oserr = _find_error(exc, OSError)
            if oserr is None or outcome.serving or isinstance(exc, KeyboardInterrupt):
                raise
            hint = " try `gateway serve --force` or `--port N`" if oserr.errno == errno.EADDRINUSE else ""
            _say(f"error: cannot listen on {config.server.host}:{config.server.port}: {oserr.strerror};{hint}")
            return EXIT_FAILURE
        finally:
            lock.release()
        if outcome.signum != signal.SIGUSR1:
            return EXIT_OK
        force = False
        if supervisor is not None:
            log.info("restart requested: exiting for %s to start us again", supervisor)
            return EXIT_RESTART
        if not env_flag(env, ENV_NO_RESPAWN):
            try:
                pid = spawn_detached(respawn_argv(args), paths.log_file, env)
            except OSError as exc:
                log.warning("respawn failed (%s): restarting in this process", exc)
            else:
                log.info("restart requested: respawned as pid %d", pid)
                _say(f"restarting as pid {pid} (logs: {paths.log_file})")
                return EXIT_OK
        log.info("restart requested: restarting in this process")
