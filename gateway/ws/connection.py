"""`/ws`: one connection actor per socket; it reads frames while it streams, so an abort acts at once."""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from nacl.public import PrivateKey

from actors import events as evs
from actors.base import ActorError, ask
from actors.messages import Abort, SessionKey, Submit, Subscribe, Subscription, TurnAccepted, Unsubscribe
from actors.store import StorageUnavailableError
from gateway.core import Runtime
from gateway.http.jsondepth import too_deep
from gateway.http.ratelimit import FailedAuthThrottle
from gateway.logs import redactor
from gateway.types import Receive, Scope, Send
from gateway.ws import crypto
from gateway.ws.filetags import parse_file_tags
from gateway.ws.handshake import AsgiTransport, Authenticated, AuthError, Disconnected, handshake
from gateway.ws.identity import load_identity
from storage import sessions as sess_db
from storage.events import EventRow
from storage.usage import UsageCapReachedError

log = logging.getLogger("gateway.ws")

CLOSE_GOING_AWAY = 1001
# How long a connection that ends waits for its helpers, cancelled, to finish (they end at their next checkpoint).
HELPERS_END_WAIT = 5.0
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
SUBSCRIBER_BUFFER = 1024
NOTIFICATION_BUFFER = 256  # as the notification hub's own channels
ASK_TIMEOUT = 10.0
FRAMES_PER_MESSAGE = 10  # all frames a minute may be this many times `ws.messages_per_minute`
_numbers = itertools.count(1)
# While a turn streams, a connection sends its deltas at most one frame per this many seconds: what arrives in
# between waits and leaves joined in the next frame. Each frame costs the gateway ~40 µs (JSON, NaCl, base64,
# hypercorn's send path, a sendto that wakes the client) and the client a decrypt, whatever its size; a model
# streams a token every 10-50 ms, so only a burst (a fast provider, a socket that was behind) is ever joined,
# and a reader cannot see a millisecond. A turn's first delta, and any delta after a pause, go at once.
FRAME_GAP = 0.001
MAX_BATCH = 256  # events joined into one delivery at most (a few KB of text)


def event_frame(event: EventRow, version: int) -> dict[str, Any] | None:
    """The frame a client of `version` gets for a session event (None: nothing for this client).

    v1 clients get only the frame types they know, each with an extra `seq` (they ignore unknown fields, not
    unknown types); a failed turn becomes an encrypted `internal_error`, an interrupted one (stop or crash) an
    `interrupted` error; an aborted or interrupted turn then a `system_status`.
    """
    typed = evs.typed(event)
    match typed:
        case evs.TextDelta() | evs.ToolActivity() | evs.SystemStatus():
            return {"type": event.type, "data": typed.data, "seq": event.seq}
        case evs.Result():
            frame: dict[str, Any] = {
                "type": "result",
                "text": typed.text,
                "stream_fallback": typed.stream_fallback,
                "files": typed.files or parse_file_tags(typed.text),
                "seq": event.seq,
            }
            if typed.usage is not msgspec.UNSET:  # an extra field, which every client ignores unless it knows it
                frame["usage"] = typed.usage
            return frame
        case evs.Error():
            # A turn a stop or crash cut off ends with `interrupted`; every other failure is the agent's.
            code = "interrupted" if typed.code == "INTERRUPTED" else "internal_error"
            return {"type": "error", "code": code, "message": typed.message, "seq": event.seq}
    if version >= 2:
        # turn_started, turn_ended, and any kind a newer gateway stored: its fields as they are.
        return {"type": event.type, **event.data, "turn_id": event.turn_id, "seq": event.seq}
    # A queued turn dropped before it started (`started: false`) streamed nothing a v1 client could clear.
    if isinstance(typed, evs.TurnEnded) and typed.state in ("aborted", "interrupted") and typed.started is not False:
        return {"type": "system_status", "data": typed.state, "seq": event.seq}
    return None


def _delta_frame(pieces: list[str], seq: int) -> bytes:
    """One `text_delta` frame carrying consecutive deltas joined (`seq`: the last one's), redacted."""
    frame = {"type": "text_delta", "data": pieces[0] if len(pieces) == 1 else "".join(pieces), "seq": seq}
    return redactor.redact_bytes(msgspec.json.encode(frame))


class WebSocketApp:
    """The raw ASGI app mounted at `/ws` (raw for control of frames and close codes; speed is the same as
    Starlette's WebSocket wrapper in scripts/bench_ws.py).

    A class instance, not a function, so that Starlette's WebSocketRoute hands it the raw ASGI triple.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve_websocket(scope, receive, send)


websocket_app = WebSocketApp()


async def serve_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept one socket, run its auth phase, then its connection actor until either side leaves."""
    runtime: Runtime = scope["app"].state.runtime
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    wire = AsgiTransport(receive, send)
    if runtime.connections >= runtime.config.ws.max_connections:
        # Every socket holds an actor and buffers: past the cap, say so (1013: try again later) and hang up.
        log.warning("refused a websocket: %d already open (ws.max_connections)", runtime.connections)
        with trio.move_on_after(1):
            try:
                await wire.send_text(_plain_error("TOO_MANY_CONNECTIONS", "too many open connections; try again later"))
            except Disconnected:
                pass
            await wire.close(CLOSE_TRY_AGAIN_LATER)
        return
    runtime.connections += 1
    try:
        client = scope.get("client")
        auth = await _authenticate(runtime, wire, str(client[0]) if client else "unknown")
        if auth is not None:
            # Here, not in _authenticate: its frame (the throttle, its closures) is gone while the socket idles.
            await Connection(runtime, wire, auth).run()
    except Disconnected:
        pass
    except Exception:
        log.exception("websocket connection failed")
    finally:
        runtime.connections -= 1
        # Shielded and bounded: the close frame goes out even when shutdown cancelled us, and never hangs it.
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await wire.close()


def _plain_error(code: str, message: str, *, retry_after: int | None = None) -> str:
    error: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if retry_after is not None:
        error["retry_after"] = retry_after
    return redactor.redact_bytes(msgspec.json.encode(error)).decode()


async def _authenticate(runtime: Runtime, wire: AsgiTransport, address: str) -> Authenticated | None:
    """The auth phase: the client's Authenticated, or None once it was refused (and told why)."""
    try:
        identity = _identity(runtime)
    except OSError as exc:
        # The first /ws connection of a gateway whose disk went read-only or full: no key can be saved yet.
        message = f"storage cannot take writes right now ({exc.strerror}): the server key cannot be created; retry"
        await wire.send_text(_plain_error("internal_error", message))
        await wire.close(CLOSE_INTERNAL)
        return None
    rest = runtime.services.rest
    throttle: FailedAuthThrottle | None = rest.throttle if rest is not None else None

    def admit() -> None:
        wait = throttle.wait(address) if throttle is not None else 0.0
        if wait > 0:
            retry = max(1, math.ceil(wait))
            message = f"too many failed authentications from this address; retry after {retry} s"
            raise AuthError("rate_limited", message, retry_after=retry)

    auth: Authenticated | None = None
    with trio.move_on_after(runtime.config.ws.auth_timeout):
        try:
            admit()  # a waiting address is refused before its auth frame is even read
            auth = await handshake(
                wire, token=runtime.token, identity=identity, default_chat=runtime.config.server.chat_id, admit=admit
            )
        except AuthError as exc:
            if exc.code == "auth_failed" and throttle is not None:
                throttle.failed(address)
            await wire.send_text(_plain_error(exc.code, exc.message, retry_after=exc.retry_after))
            await wire.close(CLOSE_TRY_AGAIN_LATER if exc.code == "rate_limited" else CLOSE_POLICY)
            return None
    if auth is not None and throttle is not None:
        throttle.succeeded(address)
    if auth is None:
        message = f"no auth frame within {runtime.config.ws.auth_timeout:g} s"
        await wire.send_text(_plain_error("auth_timeout", message))
        await wire.close(CLOSE_POLICY)
        return None
    return auth


_identities: dict[str, PrivateKey] = {}


def _identity(runtime: Runtime) -> PrivateKey:
    """The server identity key, read from the data folder once per process."""
    where = str(runtime.paths.data_dir)
    key = _identities.get(where)
    if key is None:
        key = _identities[where] = load_identity(runtime.paths)
    return key


class _Feed:
    """One subscription of a connection (its session's events, or the gateway's notifications): the publisher
    pushes into the connection's one deque without waiting, as into a memory channel's sending side; the items are
    sent by a task that exists only while there is something to send.

    Full (`limit` items not sent yet): WouldBlock, and the publisher closes it (it pushes itself as the last item),
    which makes the connection subscribe again. Once the connection ends it refuses everything (Broken).
    """

    __slots__ = ("closed", "conn", "limit", "waiting")

    def __init__(self, conn: Connection, limit: int) -> None:
        self.conn: Connection | None = conn
        self.limit = limit
        self.waiting = 0
        self.closed = False

    def send_nowait(self, value: Any, /) -> None:
        conn = self.conn
        if conn is None:
            raise trio.BrokenResourceError
        if self.closed:
            raise trio.ClosedResourceError
        if self.waiting >= self.limit:
            raise trio.WouldBlock
        self.waiting += 1
        conn.push(value)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.conn is not None:
            self.conn.push(self)  # after everything it carried: the sender resubscribes there

    def statistics(self) -> _Feed:
        return self

    @property
    def open_receive_channels(self) -> int:
        return 0 if self.conn is None else 1

    def end(self) -> None:
        self.conn = None


class Connection:
    """The connection actor: one task reading the socket; a sender task exists only while its session's events
    or notifications wait to be sent (an idle connection is one task, and keeps no channel)."""

    # Slots: thousands of idle connections each keep one of these (a __dict__ of 23 fields is ~1 KB more).
    __slots__ = (
        "_events",
        "_failures",
        "_frame_stamps",
        "_going",
        "_helpers",
        "_helpers_gone",
        "_lock",
        "_notes",
        "_own_turns",
        "_queue",
        "_reading",
        "_replaying",
        "_sending",
        "_stamps",
        "_streaming",
        "_wake",
        "auth",
        "cfg",
        "key",
        "last_seq",
        "name",
        "rt",
        "wire",
    )

    def __init__(self, runtime: Runtime, wire: AsgiTransport, auth: Authenticated) -> None:
        self.rt = runtime
        self.wire = wire
        self.auth = auth
        topic = str(auth.channel_id) if auth.channel_id else ""
        self.key = SessionKey("api", str(auth.chat_id), topic)
        self.cfg = runtime.config.ws
        self._lock: trio.Lock | None = None  # created by a send, dropped once nobody holds or waits for it
        self._own_turns: set[str] = set()
        # The rate windows, created by the first frame (an idle connection keeps no buffers it never used); lists,
        # not deques: an empty deque is a 64-slot block (~760 B), and these are pruned in bulk.
        self._stamps: list[float] | None = None
        self._frame_stamps: list[float] | None = None
        self._failures = 0
        self.last_seq = 0
        # The reader's scope while it reads: its helpers (the sender, an abort) start only then, and cancel it
        # when the client has gone. They run in the gateway's nursery for connection helpers (`Runtime.ws_tasks`),
        # each in a scope of its own listed here while it runs: a nursery per connection cost ~1.3 KB per socket.
        self._reading: trio.CancelScope | None = None
        self._helpers: list[trio.CancelScope] | None = None
        self._helpers_gone: trio.Event | None = None  # set once the last helper is gone, when someone waits
        self._going = False  # the gateway is stopping: close with 1001
        self._events: _Feed | None = None  # the session's events
        self._notes: _Feed | None = None  # the gateway's notifications
        # What waits to be sent, in arrival order: EventRows, notifications (dicts) and closed feeds; created by
        # the first item and dropped once sent.
        self._queue: deque[Any] | None = None
        self._sending = False
        # While a turn streams, the sender waits here for the next deltas instead of ending after each burst.
        self._streaming = False
        self._wake: trio.Event | None = None
        self._replaying = 0  # how many items at the head of the queue are a subscription's replay
        # Listed in the runtime's registry while it runs: `connection:<n>:<session key>`.
        self.name = f"connection:{next(_numbers)}:{self.key}"

    def backlog(self) -> int:
        """Session events waiting to be sent to this client (the registry's view of the connection's inbox)."""
        events = self._events
        return events.waiting if events is not None else 0

    def push(self, item: Any) -> None:
        """Queue an item for the client (called by the feeds, from the publisher's task: never waits)."""
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        if self._wake is not None:
            self._wake.set()
        else:
            self._kick()

    def _kick(self) -> None:
        if not self._sending and self._queue and self._reading is not None:
            self._sending = True
            self._spawn(self._sender)

    async def send(self, obj: dict[str, Any]) -> None:
        """Encrypt and send one frame."""
        await self._send_frames([redactor.redact_bytes(msgspec.json.encode(obj))])

    async def _send_frames(self, frames: list[bytes]) -> None:
        """Seal and send `frames` in order under the connection's lock, which keeps v2 counters in send order."""
        lock = self._lock
        if lock is None:
            lock = self._lock = trio.Lock()
        try:
            async with lock:
                for plain in frames:
                    await self.wire.send_frame(self.auth.channel.seal_frame(plain))
        finally:
            # Released to another waiter, trio hands it over at once (still locked): only an unused lock goes.
            if self._lock is lock and not lock.locked() and not lock.statistics().tasks_waiting:
                self._lock = None

    async def error(self, code: str, message: str) -> None:
        await self.send({"type": "error", "code": code, "message": message})

    async def run(self) -> None:
        """Serve the socket until either side leaves; listed in `runtime.registry` meanwhile."""
        # Plain try/finally, not a context manager: this stays a few hundred bytes per idle connection.
        info = self.rt.registry.register(self.name, self, state="running")
        sub_taken = False
        try:
            sub = await self._subscribe(self.auth.resume_from, before_auth_ok=True)
            sub_taken = sub is not None
            if sub is not None:
                await self._greet(sub)
                del sub  # its replay is queued: an idle connection keeps none of it
                # Read the socket in this task (here, not in a method of its own: one frame fewer per idle socket);
                # a sender starts beside it whenever something waits to be sent.
                reading = self._start_reading()
                try:
                    with reading:
                        await self._read()
                except Disconnected:
                    self.wire.closed = True
                finally:
                    self._reading = None  # no helper starts from here on
                    await self._end_helpers()
                if self._going:
                    await self.wire.close(CLOSE_GOING_AWAY)
        finally:
            try:
                if sub_taken:
                    await self._left()
            finally:
                self.rt.registry.unregister(self.name, info)

    async def _left(self) -> None:
        """The connection ended: let go of its subscriptions, and abort the turns its client left running."""
        if self._notes is not None:
            self.rt.notifications.discard(self._notes)
            self._notes.end()
        if self._events is not None:
            self._events.end()  # the session drops it at its next event or idle check
            try:
                # Said, so that a parked session's subscribers are not kept until the router's next sweep.
                self.rt.router_address.send_nowait(Unsubscribe(self.key, self._events))
            except ActorError:
                pass  # router busy or stopping: the ended feed is dropped all the same, only later
        self._queue = None
        if self._own_turns:
            # The client left mid-turn: abort its turns, running or queued, and only those (another
            # connection on the key keeps its own). Shielded: the cancel above must not skip it.
            own = frozenset(self._own_turns)
            with trio.CancelScope(shield=True), trio.move_on_after(ASK_TIMEOUT):
                try:
                    await ask(self.rt.router_address, lambda r: Abort(self.key, r, only=own), timeout=ASK_TIMEOUT)
                except ActorError as exc:
                    log.warning("abort on disconnect of %s failed: %r", self.key, exc)

    async def _greet(self, sub: Subscription) -> None:
        """Send auth_ok, subscribed to notifications first; queue the subscription's replay."""
        rt = self.rt
        # This chat's provider and model: its own pin where it has one (`PUT /api/chat/sessions/{id}`), else the
        # gateway default, which is also sent so a client can show both.
        try:
            pin = await rt.store.call(sess_db.pin_of, sub.session_id)
        except (ActorError, StorageUnavailableError) as exc:
            log.warning("auth_ok for %s: cannot read the session's pin (%r); reporting the default", self.key, exc)
            pin = (None, None)
        active, model = rt.effective(*pin)
        hello: dict[str, Any] = {"type": "auth_ok", "chat_id": self.auth.chat_id}
        if self.auth.channel_id:
            hello["channel_id"] = self.auth.channel_id
        hello |= {
            "e2e_pk": crypto.b64encode(self.auth.server_public),
            "providers": [p.info().as_dict() for p in rt.providers.values()],
            "active_provider": active,
            "active_model": model,
            "default_provider": rt.choice.provider,
            "default_model": rt.active_model(),
            "session_id": sub.session_id,
            "last_seq": sub.last_seq,
        }
        # Subscribed before auth_ok: a client that has auth_ok gets every notification published after it.
        self._notes = _Feed(self, NOTIFICATION_BUFFER)
        self.rt.notifications.add(self._notes)
        resume = self.auth.resume_from
        # Live: what came before is history. Resuming: a seq past the session's end (another database) is clamped.
        self.last_seq = sub.last_seq if resume is None else min(resume, sub.last_seq)
        if sub.replay:
            # Sent first, ahead of any live event that arrived meanwhile.
            self._queue = deque([*sub.replay, *(self._queue or ())])
            self._replaying = len(sub.replay)
        if self.auth.version == 1:
            await self.wire.send_text(msgspec.json.encode(hello).decode())  # v1: the last plaintext frame
        else:
            await self.send(hello)

    def _start_reading(self) -> trio.CancelScope:
        """The reader's scope, from which on helpers may start (those waiting are started now)."""
        reading = self._reading = trio.CancelScope()
        if self._going or self.rt.shutdown.is_set():  # authenticated while the gateway stops
            self._going = True
            reading.cancel()
        self._kick()
        return reading

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Start a helper beside the reader (only while it reads), in a scope the connection's end cancels."""
        scope = trio.CancelScope()
        if self._helpers is None:
            self._helpers = []
        self._helpers.append(scope)
        tasks = self.rt.ws_tasks
        assert tasks is not None  # set before the edge serves
        tasks.start_soon(self._guard, scope, fn)

    async def _guard(self, scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
        """Run one helper; the client going away ends the connection quietly, a bug ends it with a log line."""
        try:
            with scope:
                await fn()
        except Disconnected:
            self.wire.closed = True
            self._stop_reading()
        except Exception:
            log.exception("websocket connection %s failed", self.name)
            self._stop_reading()
        finally:
            helpers = self._helpers
            if helpers is not None:
                helpers.remove(scope)
                if not helpers:
                    self._helpers = None
                    if self._helpers_gone is not None:
                        self._helpers_gone.set()

    def _stop_reading(self) -> None:
        if self._reading is not None:
            self._reading.cancel()

    async def _end_helpers(self) -> None:
        """Cancel the helpers still running and wait until they are gone: none may touch the socket after this
        task hands it back. Shielded (this runs when the connection is cancelled too) and bounded."""
        if not self._helpers:
            return
        for scope in self._helpers:
            scope.cancel()
        gone = self._helpers_gone = trio.Event()
        with trio.CancelScope(shield=True), trio.move_on_after(HELPERS_END_WAIT):
            await gone.wait()

    def going_away(self) -> None:
        """At shutdown (called by the gateway's one shutdown watcher), tell the client at once (1001) instead of
        leaving it to hypercorn's graceful timeout.

        Its turn is not aborted: the restart marks it interrupted, and the client resumes with `resume_from`.
        """
        self._going = True
        self._own_turns.clear()
        self._stop_reading()

    async def _subscribe(self, after: int | None, *, before_auth_ok: bool = False) -> Subscription | None:
        feed = _Feed(self, SUBSCRIBER_BUFFER)
        try:
            sub: Subscription = await ask(
                self.rt.router_address, lambda r: Subscribe(self.key, feed, after, r), timeout=ASK_TIMEOUT
            )
        except (ActorError, StorageUnavailableError) as exc:
            feed.end()
            message = f"the session is not available ({exc}); reconnect later"
            if isinstance(exc, StorageUnavailableError):
                # A new chat needs a stored session row: said at once, not after the ask's timeout.
                message = f"storage cannot take writes right now ({exc}); reconnect later"
            if before_auth_ok and self.auth.version == 1:
                # A v1 client has no server key before auth_ok: it could not open an encrypted error.
                await self.wire.send_text(_plain_error("internal_error", message))
                await self.wire.close(CLOSE_INTERNAL)
            else:
                await self.error("internal_error", message)
            return None
        self._events = feed
        return sub

    async def _deliver(self, events: list[EventRow]) -> bool:
        """Send a batch of events under one lock acquisition (one scheduling round, not one per frame); True when
        a text_delta frame went out."""
        frames: list[bytes] = []
        # Consecutive text_deltas of one turn waiting here go out as one frame with the joined text and the last
        # seq: the client sees the same text, and a socket that is behind catches up with one frame, not many.
        delta: list[str] = []
        delta_seq = 0
        delta_turn: str | None = None
        for event in events:
            if event.seq <= self.last_seq:
                continue
            self.last_seq = event.seq
            if event.type in ("text_delta", "turn_started"):
                self._streaming = True
                data = event.data.get("data")
                if isinstance(data, str):
                    if delta and (delta_turn != event.turn_id or delta_seq != event.seq - 1):
                        frames.append(_delta_frame(delta, delta_seq))
                        delta = []
                    delta.append(data)
                    delta_seq, delta_turn = event.seq, event.turn_id
                    continue
            if delta:
                frames.append(_delta_frame(delta, delta_seq))
                delta = []
            if event.type == "turn_ended":
                self._own_turns.discard(str(event.data.get("turn_id")))
                self._streaming = False
            frame = event_frame(event, self.auth.version)
            if frame is not None:
                frames.append(redactor.redact_bytes(msgspec.json.encode(frame)))
        if delta:
            frames.append(_delta_frame(delta, delta_seq))
        if frames:
            await self._send_frames(frames)
        return bool(delta)

    async def _sender(self) -> None:
        """Send what waits, then end (`push` starts it again); while a turn streams it waits for the next deltas
        instead, so that a reply is one task, not one per burst."""
        try:
            queue = self._queue
            while queue:
                await self._send_queued(queue)
                if self._streaming and self._reading is not None:
                    self._wake = trio.Event()
                    try:
                        await self._wake.wait()
                    finally:
                        self._wake = None
            self._queue = None  # an idle connection keeps no deque
        finally:
            self._sending = False
        self._kick()  # something arrived as the loop ended

    async def _send_queued(self, queue: deque[Any]) -> None:
        """Send everything queued, in order: consecutive session events as one batch."""
        while queue:
            item = queue[0]
            if isinstance(item, EventRow):
                batch: list[EventRow] = []
                while queue and len(batch) < MAX_BATCH and isinstance(queue[0], EventRow):
                    batch.append(queue.popleft())
                # The replay at the head of the queue came with the subscription, not through the feed.
                replayed = min(self._replaying, len(batch))
                self._replaying -= replayed
                if self._events is not None:
                    self._events.waiting = max(0, self._events.waiting - (len(batch) - replayed))
                began = trio.current_time()
                if await self._deliver(batch) and self._streaming and len(queue) < MAX_BATCH:
                    # Deltas went out: the next ones gather for the rest of FRAME_GAP (unless a batch waits).
                    await trio.sleep_until(began + FRAME_GAP)
                continue
            queue.popleft()
            if isinstance(item, _Feed):
                if item is self._notes:
                    # Cut off for being slow: subscribe again (notifications are persisted; the REST API has them
                    # all).
                    self.rt.notifications.discard(item)
                    item.end()
                    self._notes = _Feed(self, NOTIFICATION_BUFFER)
                    self.rt.notifications.add(self._notes)
                elif item is self._events:
                    # The session cut us off (we were too slow) or restarted: resume from the last event sent.
                    item.end()
                    self._events = None
                    self._streaming = False  # its turn's end may never come through this feed
                    again = await self._subscribe(self.last_seq)
                    if again is None:
                        # No stream to give: close, so the client reconnects (with resume_from) rather than wait
                        # forever.
                        await self.wire.close(CLOSE_INTERNAL)
                        raise Disconnected()
                    if again.replay:
                        queue.extendleft(reversed(again.replay))
                        self._replaying = len(again.replay)
                continue
            if self._notes is not None:
                self._notes.waiting = max(0, self._notes.waiting - 1)
            await self.send({"type": "notification", "notification": item})

    @staticmethod
    def _window_ok(stamps: list[float], limit: int) -> bool:
        """A sliding one-minute window: True (and counted) while fewer than `limit` entries are in it."""
        now = trio.current_time()
        if stamps and now - stamps[0] >= 60.0:
            del stamps[: bisect.bisect_right(stamps, now - 60.0)]
        if len(stamps) >= limit:
            return False
        stamps.append(now)
        return True

    async def _read(self) -> None:
        while True:
            frame = await self.wire.receive()
            if len(frame) > self.cfg.max_frame_bytes:
                message = f"frames are limited to {self.cfg.max_frame_bytes} bytes"
                await self._refuse_unopened("frame_too_large", message, close=CLOSE_TOO_BIG)
                return
            # Every frame (aborts and junk too) counts here, before any crypto work: this bounds the CPU a client
            # can cost and the v1 replay set (one nonce per accepted frame) of a long-lived connection.
            if self._frame_stamps is None:
                self._frame_stamps = []
            if not self._window_ok(self._frame_stamps, FRAMES_PER_MESSAGE * self.cfg.messages_per_minute):
                if self.auth.version >= 2:
                    # A v2 frame left unopened puts the counters out of step: the connection cannot go on.
                    await self._refuse_unopened("rate_limited", "too many frames", close=CLOSE_POLICY)
                    return
                await self.error("rate_limited", "too many frames; slow down")
                continue
            try:
                plain = self.auth.channel.open_frame(frame)
            except crypto.DecryptError as exc:
                self._failures += 1
                if self.auth.version >= 2:  # v2 frames fail only under attack or a bug: close at once
                    await self._refuse_unopened("decrypt_failed", str(exc), close=CLOSE_POLICY)
                    return
                await self.error("decrypt_failed", str(exc))
                if self._failures >= self.cfg.max_decrypt_failures:  # v1 allows a few
                    await self.wire.close(CLOSE_POLICY)
                    return
                continue
            try:
                msg = None if too_deep(plain) else msgspec.json.decode(plain)
            except msgspec.DecodeError:
                msg = None
            if not isinstance(msg, dict):
                await self.error("decrypt_failed", "the frame is not a JSON object")
                continue
            kind = msg.get("type")
            text = msg.get("text")
            limit = self.cfg.messages_per_minute
            if kind == "abort" or (kind == "message" and isinstance(text, str) and text.strip().lower() == "/stop"):
                self._spawn(self._abort)  # the reader reads on while the abort runs
            elif kind == "message":
                if not isinstance(text, str) or not text.strip():
                    await self.error("empty", "the message has no text")
                elif not self._window_ok(self._stamps if self._stamps is not None else self._new_stamps(), limit):
                    await self.error("rate_limited", f"at most {self.cfg.messages_per_minute} messages a minute")
                else:
                    await self._submit(text)
            else:
                await self.error("unknown_type", f"unknown message type {kind!r}")

    def _new_stamps(self) -> list[float]:
        self._stamps = []
        return self._stamps

    async def _refuse_unopened(self, code: str, message: str, *, close: int) -> None:
        """Refuse a frame that was not opened, then close. v1 gets an encrypted error first, as its clients expect;
        v2 gets no encrypted answer to a frame nobody authenticated (that would seal a frame on demand for whoever
        sent it): the close code and its reason, `code`, say it all."""
        if self.auth.version >= 2:
            await self.wire.close(close, code)
            return
        await self.error(code, message)
        await self.wire.close(close)

    async def _submit(self, text: str) -> None:
        try:
            accepted: TurnAccepted = await ask(
                self.rt.router_address, lambda r: Submit(self.key, text, r), timeout=ASK_TIMEOUT
            )
        except ActorError as exc:
            await self.error("internal_error", f"cannot start the turn: {exc}")
            return
        except StorageUnavailableError as exc:
            # Disk full, read-only or frozen: the message was not stored, so it is not accepted. Keep the socket.
            await self.error("internal_error", f"cannot start the turn: {exc}; nothing was stored, retry later")
            return
        except UsageCapReachedError as exc:
            # Refused before it was stored: the client keeps its text and may send it again after midnight UTC.
            await self.error("usage_cap_reached", f"{exc}; the message was not stored")
            return
        self._own_turns.add(accepted.turn_id)

    async def _abort(self) -> None:
        try:
            killed: int = await ask(self.rt.router_address, lambda r: Abort(self.key, r), timeout=30.0)
        except ActorError as exc:
            await self.error("internal_error", f"cannot abort: {exc}")
            return
        self._own_turns.clear()
        await self.send({"type": "abort_ok", "killed": killed})
