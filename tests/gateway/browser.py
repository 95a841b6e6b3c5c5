"""A real headless Chromium (Debian's /usr/bin/chromium, never a downloaded one) driven by Playwright's sync API.

The gateway runs in the trio test; one Chromium per test process runs on a thread of its own, each test in a fresh
context, and a scenario that must act on the gateway meanwhile calls back with `to_trio` / `to_trio_sync`. Every
Playwright wait has a timeout, so a stuck page fails the test instead of hanging the thread.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, WebSocket, sync_playwright

from tests.gateway.harness import require_program

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def require_chromium() -> None:
    require_program(CHROMIUM, "chromium")


@dataclass
class Console:
    errors: list[str] = field(default_factory=list)

    def on_message(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"{msg.text} ({msg.location.get('url', '')})")

    def on_page_error(self, exc: Any) -> None:
        self.errors.append(f"uncaught: {exc}")


FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+) \(.*\) \((\S+)\)")


def failed_loads(errors: list[str], base_url: str) -> list[tuple[int, str]]:
    """The console errors as (status, path) of requests answered with an error status, which is the line Chromium
    logs for each; any other kind of console error fails the test here."""
    out = []
    for line in errors:
        m = FAILED_LOAD.fullmatch(line)
        assert m is not None and m[2].startswith(base_url), line
        out.append((int(m[1]), m[2].removeprefix(base_url)))
    return out


_REFUSED = re.compile(r"Failed to load resource: net::ERR_[A-Z_]+ \((\S+)\)")
_WS_FAILED = re.compile(r"WebSocket connection to '(\S+)' failed")


def beside_an_outage(errors: list[str], base_url: str) -> list[str]:
    """The console errors other than the browser's own report of a request or socket to `base_url` that found no
    server: while a test has the gateway down on purpose, what the page asks then fails, and Chromium says so."""
    ws_url = base_url.replace("http://", "ws://", 1)
    out = []
    for line in errors:
        m = _REFUSED.match(line)
        if m and m[1].startswith(base_url + "/"):
            continue
        m = _WS_FAILED.match(line)
        if m and m[1].startswith(ws_url + "/"):
            continue
        out.append(line)
    return out


def _open_page(
    browser: Browser,
    base_url: str,
    scenario: Callable[[Page], None],
    viewport: dict[str, int] | None,
    before_load: Callable[[Page], None] | None,
) -> Console:
    """A fresh context (its own cookies, storage and cache) and page on `browser`, closed after `scenario`."""
    console = Console()
    context = browser.new_context(viewport=viewport or DESKTOP)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", console.on_message)
        page.on("pageerror", console.on_page_error)
        if before_load is not None:
            before_load(page)
        page.goto(base_url + "/")
        scenario(page)
    finally:
        context.close()
    return console


class _SharedChromium:
    """One Chromium for the whole test process, launched on first use: each launch costs a second or two, and
    some forty tests open a page. Playwright's sync API works only on the thread that started it, so one thread
    owns it and runs each test's page in turn; `stop()` (at the end of the session) closes the browser."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[Browser], Any], Future[Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, job: Callable[[Browser], T]) -> T:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="chromium", daemon=True)
                self._thread.start()
        done: Future[T] = Future()
        self._jobs.put((job, done))
        return done.result()

    def _serve(self) -> None:
        with sync_playwright() as pw:
            browser: Browser | None = None
            try:
                while (item := self._jobs.get()) is not None:
                    job, done = item
                    try:
                        if browser is None or not browser.is_connected():  # a crashed browser is replaced
                            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                        done.set_result(job(browser))
                    except BaseException as exc:  # the test's own failure, raised in its thread
                        done.set_exception(exc)
            finally:
                if browser is not None:
                    browser.close()

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join(timeout=30)
                self._thread = None


chromium = _SharedChromium()
_trio_token = threading.local()


def to_trio(afn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """From a scenario: run `afn(*args)` in the test's trio run (the gateway's side) and return its result."""
    return trio.from_thread.run(afn, *args, trio_token=_trio_token.value)


def to_trio_sync(fn: Callable[..., T], *args: Any) -> T:
    """From a scenario: call `fn(*args)` in the test's trio thread."""
    return trio.from_thread.run_sync(fn, *args, trio_token=_trio_token.value)


def run_browser(
    base_url: str,
    scenario: Callable[[Page], None],
    *,
    token: trio.lowlevel.TrioToken,
    viewport: dict[str, int] | None = None,
    before_load: Callable[[Page], None] | None = None,
) -> Console:
    """Open a page on `base_url` in the shared Chromium and run `scenario(page)`; return what the console reported.
    `before_load(page)` runs before the page is opened (e.g. `page.clock.install()`, the page's clock)."""

    def job(browser: Browser) -> Console:
        _trio_token.value = token
        try:
            return _open_page(browser, base_url, scenario, viewport, before_load)
        finally:
            _trio_token.value = None

    return chromium.run(job)


async def in_browser(base_url: str, scenario: Callable[[Page], None], **kw: Any) -> Console:
    """Run a browser scenario off the trio thread while the trio test (and its gateway) keeps running; the scenario
    acts on the trio side with `to_trio` / `to_trio_sync`."""
    token = trio.lowlevel.current_trio_token()
    return await trio.to_thread.run_sync(lambda: run_browser(base_url, scenario, token=token, **kw))


# Responses that last as long as the page does: the notification stream (notifications only, never a secret).
ENDLESS = frozenset({"/api/notifications/stream"})


@dataclass
class Traffic:
    """Everything the page received: HTTP responses (their bodies are read by `bodies`) and WebSocket frames."""

    responses: list[Response] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("response", self._on_response)  # Playwright tags the handler: a bound method, not a builtin
        page.on("websocket", self._on_socket)

    def _on_response(self, response: Response) -> None:
        self.responses.append(response)

    def _on_socket(self, ws: WebSocket) -> None:
        ws.on("framereceived", lambda data: self.frames.append(data if isinstance(data, str) else repr(data)))

    def bodies(self) -> dict[str, str]:
        """`METHOD url #n` -> body text of every response so far (call it while the page is still open)."""
        out: dict[str, str] = {}
        for n, r in enumerate(self.responses):
            if urlsplit(r.url).path in ENDLESS:
                continue  # still open while the page is: reading its body would wait for ever
            out[f"{r.request.method} {r.url} #{n}"] = r.body().decode("utf-8", "replace")
        return out


# Where the element at the centre of `selector` is not that element or inside it, what covers it (else null).
_COVERED = """sel => { const el = document.querySelector(sel); const r = el.getBoundingClientRect();
    const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    return top && (top === el || el.contains(top)) ? null : (top ? top.outerHTML.slice(0, 200) : 'nothing'); }"""


def covering(page: Page, selector: str) -> str | None:
    """What lies over the middle of `selector` (a click there would land on it), or None when nothing does."""
    found: str | None = page.evaluate(_COVERED, selector)
    return found


def chat_then_a_notification(page: Page, text: str, trigger: Callable[[], Any]) -> dict[str, Any]:
    """Send `text` in the default chat, then run `trigger` (from the trio side) to make a notification arrive over
    `/ws`; return what the page then shows (the tests of a man in the middle use it: each thing must show once)."""
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")
    page.wait_for_selector(".msg.assistant.done")
    to_trio(trigger)
    page.wait_for_selector(".toast.note")
    page.wait_for_selector("#bell .badge:not([hidden])")
    return {
        "badge": page.inner_text("#bell .badge"),
        "toasts": page.locator(".toast.note").count(),
        "assistants": texts(page, ".msg.assistant .text"),
        "users": texts(page, ".msg.user"),
        "state": page.get_attribute("#conn-state", "class"),
    }


def login_with_token(page: Page, token: str) -> None:
    page.fill("#login-token", token)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#conn-state.live")


def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def login_with_account(page: Page, username: str, password: str) -> None:
    page.click("text=Account")
    page.fill("#login-user", username)
    page.fill("#login-pass", password)
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#conn-state.live")


def sign_out(page: Page) -> None:
    page.click("#logout")
    page.wait_for_selector("#token-form")
