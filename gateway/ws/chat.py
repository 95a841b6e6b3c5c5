"""`gateway chat`: talk to a gateway over `/ws` from a terminal; Ctrl-C aborts the running turn."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import trio
import trio_websocket

from gateway.config.file import Config, Paths
from gateway.daemon.control import reachable_url
from gateway.daemon.lock import live_lock
from gateway.ws.client import Client, HandshakeError, connect
from gateway.ws.crypto import fingerprint

PROMPT = "> "
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def gateway_url(config: Config, paths: Paths) -> str:
    """The `/ws` URL of this config's gateway: where it really listens (its lock says), else where the config says
    it would (a gateway on port 0 is found only through its lock)."""
    held = live_lock(paths)
    if held is not None and held.url:
        base = held.url
    else:
        host = config.server.host
        base = f"http://{'[' + host + ']' if ':' in host else host}:{config.server.port}"
    return ws_url(reachable_url(base))


def ws_url(url: str) -> str:
    """The `/ws` URL of a gateway given as `gateway serve` prints it (`http://host:port/`), as `ws(s)://…/ws`, or
    as a bare `host:port`. A path (a gateway behind a proxy at `/gw/`) is kept. Raises ValueError for anything else.
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL ({exc})") from None
    scheme = _WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(
            f"{url!r} is not a gateway URL; give http://host:port/ (as `gateway serve` prints it) or ws://host:port/ws"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class ChatState:
    """The last seq seen per URL and scope, kept in the data folder so `--resume` knows where to start."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}

    def get(self, key: str) -> int | None:
        return self._load().get(key)

    def put(self, key: str, seq: int) -> None:
        data = self._load()
        data[key] = seq
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(data))
        except OSError:
            pass  # resuming is a convenience: never fail the chat over it


class Printer:
    """Prints frames as they arrive; `done` is set when the current turn has ended."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.streamed = ""
        self.done = trio.Event()
        self.done.set()  # no turn running yet
        self.replay_end = 0  # frames up to this seq are replayed history: they end no turn of ours
        # This client asked for an abort (Ctrl-C): its `abort_ok` is the one line about it, and the session's own
        # "aborted" status for the same turn (which may come before or after it) is not shown again.
        self.aborting = False
        self.abort_told = False

    def begin(self) -> None:
        """A turn of ours starts: `done` is set again when it ends."""
        self.done = trio.Event()
        self.aborting = self.abort_told = False

    def show(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        seq = frame.get("seq")
        live = not isinstance(seq, int) or seq > self.replay_end
        if kind == "text_delta":
            self.streamed += str(frame.get("data"))
            self.out.write(str(frame.get("data")))
            self.out.flush()
        elif kind == "tool_activity":
            self.err.write(f"\n[tool: {frame.get('data')}]\n")
        elif kind == "system_status" and frame.get("data") in ("aborted", "interrupted"):
            if not live:
                self.err.write(f"\n[that turn was {frame.get('data')}]\n")
            elif not (self.aborting or self.abort_told):
                # Not our Ctrl-C: another client of this chat stopped the turn, or the gateway restarted mid-turn.
                self.err.write(f"\n[the turn was {frame.get('data')}]\n")
                self._end(live)
        elif kind == "system_status" and frame.get("data"):
            self.err.write(f"[{frame.get('data')}]\n")
        elif kind == "result":
            text = str(frame.get("text") or "")
            if text and text != self.streamed:
                self.out.write(text)
            self.out.write("\n")
            self.out.flush()
            for f in frame.get("files") or []:
                self.err.write(f"[file: {f.get('path')}]\n")
            self._end(live)
        elif kind == "abort_ok":
            if not self.abort_told:
                self.err.write(f"\n[aborted: {frame.get('killed')} process(es) killed]\n")
            self.aborting, self.abort_told = False, True
            self._end(live)
        elif kind == "error":
            self.err.write(f"\n[error {frame.get('code')}: {frame.get('message')}]\n")
            self._end(live)
        elif kind == "notification":
            note = frame.get("notification") or {}
            self.err.write(f"\n[notification: {note.get('title')}: {note.get('body')}]\n")
        self.err.flush()

    def _end(self, live: bool) -> None:
        self.streamed = ""
        if live:
            self.done.set()


async def _pump(client: Client, printer: Printer, finished: trio.Event, nursery: trio.Nursery) -> None:
    async for frame in client.frames():
        printer.show(frame)
    # The gateway closed the socket (a restart, say): stop waiting for stdin or for a turn that cannot end here.
    finished.set()
    nursery.cancel_scope.cancel()


async def chat(
    url: str,
    token: str,
    *,
    chat_id: int | None,
    channel_id: int | None,
    resume_from: int | None,
    v2: bool,
    pin: str | None,
    message: str | None,
    state: ChatState,
    state_key: str,
) -> int:
    """Run the chat until stdin ends (or after one `message`); return an exit code."""
    printer = Printer(sys.stdout, sys.stderr)
    try:
        async with connect(
            url, token, chat_id=chat_id, channel_id=channel_id, resume_from=resume_from, v2=v2, pin=pin
        ) as client:
            finished = trio.Event()
            printer.replay_end = int(client.auth_ok.get("last_seq") or 0)
            if message is None:
                print(banner(url, client, pin), file=sys.stderr, flush=True)
            done_here = False
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, client, printer, finished, nursery)
                    with trio.open_signal_receiver(signal.SIGINT) as signals:
                        nursery.start_soon(_on_sigint, signals, client, printer, nursery)
                        await _converse(client, printer, message, finished)
                        done_here = True  # stdin ended, or the one message was answered
                    nursery.cancel_scope.cancel()
            finally:
                state.put(state_key, client.last_seq)
            if finished.is_set() and not done_here:
                closed = client.ws.closed
                why = f"code {closed.code}{': ' + closed.reason if closed.reason else ''}" if closed else "closed"
                hint = "`gateway chat --resume` shows what you missed"
                print(f"\nerror: the gateway closed the connection ({why}); {hint}", file=sys.stderr)
                return 1
    except HandshakeError as exc:
        if exc.code == "auth_failed":
            # Only the gateway token opens /ws: a refusal here is never about a user session.
            print(
                f"error: the gateway refused the token (auth_failed: {exc.message}); pass the gateway's own with "
                "--token (`gateway token` on its machine prints it)",
                file=sys.stderr,
            )
        else:
            print(f"error: the gateway refused the connection: {exc}", file=sys.stderr)
        return 1
    except trio_websocket.ConnectionRejected as exc:
        print(f"error: {url} is not a gateway's /ws (HTTP {exc.status_code}); check --url", file=sys.stderr)
        return 1
    except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
        # trio-websocket wraps a refused TCP connection in a HandshakeError: show the cause, not a traceback.
        cause = exc.__cause__ or exc
        print(
            f"error: cannot connect to {url}: {cause or type(cause).__name__}; is the gateway running?", file=sys.stderr
        )
        return 1
    except trio.TooSlowError:
        print(f"error: {url} did not finish the handshake in time; is it a gateway?", file=sys.stderr)
        return 1
    return 0


def banner(url: str, client: Client, pin: str | None) -> str:
    """Where the chat is connected, to which session, and how to abort and quit (shown before the first prompt)."""
    ok = client.auth_ok
    if client.version >= 2:
        key = fingerprint(client.server_key) if client.server_key else "?"
        how = f"v2, server key {key} {'pinned' if pin else 'NOT pinned (pass --pin)'}"
    else:
        how = "v1"
    scope = f"chat {ok.get('chat_id')}" + (f", channel {ok['channel_id']}" if ok.get("channel_id") else "")
    lines = [
        f"connected to {url} ({how}), {scope}",
        f"session {ok.get('session_id')}, provider {ok.get('active_provider')} (model {ok.get('active_model')})",
        "type a message and press Enter; Ctrl-C aborts the running turn; Ctrl-D, or Ctrl-C at the prompt, quits",
    ]
    return "\n".join(lines)


async def _converse(client: Client, printer: Printer, message: str | None, finished: trio.Event) -> None:
    if message is not None:
        printer.begin()
        await client.send_message(message)
        await printer.done.wait()
        return
    while not finished.is_set():
        print(PROMPT, end="", file=sys.stderr, flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            print(file=sys.stderr)  # end the prompt's line: the shell's own prompt starts on a fresh one
            return
        if not line.strip():
            continue
        printer.begin()
        await client.send_message(line.rstrip("\n"))
        await printer.done.wait()


async def _on_sigint(signals: Any, client: Client, printer: Printer, nursery: trio.Nursery) -> None:
    async for _ in signals:
        if not printer.done.is_set():
            printer.aborting = True
            await client.abort()  # Ctrl-C during a turn: abort the turn, stay connected
        else:
            print(file=sys.stderr)  # between turns (at the prompt): leave, on a fresh line
            nursery.cancel_scope.cancel()
            return
