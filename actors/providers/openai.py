"""The `openai` provider: any OpenAI-compatible streaming chat endpoint (OpenAI, Ollama, llama.cpp, vLLM)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec
import trio

from actors.providers.base import (
    HistoryMessage,
    ProbeResult,
    ProviderError,
    ProviderEvent,
    ProviderInfo,
    SystemStatus,
    TextDelta,
    ToolActivity,
    TurnRequest,
    Usage,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("gateway.provider.openai")

RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class OpenAISettings(msgspec.Struct, frozen=True):
    base_url: str = "https://api.openai.com/v1"
    api_key: str = ""
    model: str = "gpt-4o-mini"
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str = ""
    context_tokens: int = 8000  # budget for system prompt + history + prompt (estimated at 4 chars a token)
    connect_timeout: float = 10.0
    read_timeout: float = 120.0  # the longest silence tolerated inside a stream
    max_retries: int = 3
    backoff: float = 0.5  # the first retry's wait, doubled for each next one...
    max_backoff: float = 30.0  # ...up to this (a Retry-After too)...
    max_retry_wait: float = 300.0  # ...and retries stop once their waits would pass this in total (issue 13)
    max_iterations: int = 8  # model ↔ tool round trips in one turn
    models: tuple[str, ...] = ()
    # The owner set base_url (config file or gateway token): it may be a private address such as a local Ollama.
    # Set by someone else (an admin account), the client's outbound policy keeps it to public addresses.
    base_url_trusted: bool = True
    # Ask for the token usage at the end of each stream (`stream_options`); off for an endpoint that refuses the
    # field, whose turns are then counted by estimate.
    stream_usage: bool = True


class HttpClientFactory(Protocol):
    """Makes the HTTP client of a turn; `trusted` lists URLs whose host may be private (see OpenAISettings)."""

    def __call__(self, *, trusted: Sequence[str] = (), **kwargs: Any) -> httpx.AsyncClient: ...


def plain_client(*, trusted: Sequence[str] = (), **kwargs: Any) -> httpx.AsyncClient:
    """A client without an outbound policy (for a provider used outside the gateway, as in tests); the gateway
    gives its providers `OutboundPolicy.client` instead."""
    import httpx

    return httpx.AsyncClient(**kwargs)


class ToolBox(Protocol):
    """Tools the model may call (MCP servers plug in here); `call` returns the tool's text result."""

    def specs(self) -> list[dict[str, Any]]: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> str: ...


@runtime_checkable
class ScopedToolBox(ToolBox, Protocol):
    """A tool box whose offer depends on who the turn is for (users switch MCP servers off for themselves)."""

    def scoped(self, owner: str | None) -> ToolBox: ...


def estimate_tokens(text: str) -> int:
    """A cheap, conservative token estimate (no tokenizer on a Pi): ~4 characters a token, plus framing."""
    return math.ceil(len(text) / 4) + 4


def build_messages(
    settings: OpenAISettings, history: Sequence[HistoryMessage], prompt: str, context: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """System prompt and context (enabled skills), then the newest history that fits the budget, then the prompt."""
    budget = settings.context_tokens - estimate_tokens(prompt)
    head: list[dict[str, Any]] = []
    for text in [settings.system_prompt, *context]:
        if text and estimate_tokens(text) <= budget:
            head.append({"role": "system", "content": text})
            budget -= estimate_tokens(text)
    kept: list[dict[str, Any]] = []
    for m in reversed(history):
        cost = estimate_tokens(m.content)
        if cost > budget:
            break
        budget -= cost
        kept.append({"role": m.role, "content": m.content})
    kept.reverse()
    return [*head, *kept, {"role": "user", "content": prompt}]


class _ToolCall(msgspec.Struct):
    id: str = ""
    name: str = ""
    arguments: str = ""


class _Round(msgspec.Struct):
    text: list[str] = msgspec.field(default_factory=list)
    calls: dict[int, _ToolCall] = msgspec.field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None  # the round's own report (`usage` of the last chunk, or of a whole JSON answer)


class OpenAITurn:
    def __init__(
        self,
        settings: OpenAISettings,
        request: TurnRequest,
        tools: ToolBox | None,
        sleep: Callable[[float], Awaitable[None]],
        context: Sequence[str] = (),
        http_client: HttpClientFactory = plain_client,
    ) -> None:
        self.s = settings
        self.request = request
        self.tools = tools
        self._sleep = sleep
        self.context = context
        self.http_client = http_client

    async def events(self) -> AsyncIterator[ProviderEvent]:
        try:
            # aclosing: an abort closes this generator, and the inner one (holding the HTTP client) with it.
            async with aclosing(self._events()) as events:
                async for event in events:
                    yield event
        except ProviderError as exc:
            # Upstream error bodies may echo what they were sent (OpenAI-compatible servers quote the key):
            # the message goes to the user, the log and the database, so the key never rides along.
            if self.s.api_key and self.s.api_key in str(exc):
                raise ProviderError(str(exc).replace(self.s.api_key, "[redacted]")) from None
            raise

    async def _events(self) -> AsyncGenerator[ProviderEvent, None]:
        # httpx (~50 ms and several MiB with its CLI's imports) is loaded by the first turn, not at start.
        import httpx

        s = self.s
        messages = build_messages(s, self.request.history, self.request.prompt, self.context)
        timeout = httpx.Timeout(s.read_timeout, connect=s.connect_timeout)
        headers = {"Accept": "text/event-stream"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        trusted = (s.base_url,) if s.base_url_trusted else ()
        client = self.http_client(trusted=trusted, base_url=s.base_url.rstrip("/"), timeout=timeout, headers=headers)
        async with client:
            for _ in range(max(s.max_iterations, 1)):
                rnd = _Round()
                async for event in self._stream_round(client, messages, rnd):
                    yield event
                if rnd.usage is not None:
                    yield rnd.usage
                if rnd.finish_reason != "tool_calls" or not rnd.calls:
                    return
                calls = [rnd.calls[i] for i in sorted(rnd.calls)]
                messages.append(
                    {
                        "role": "assistant",
                        "content": "".join(rnd.text) or None,
                        "tool_calls": [
                            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                            for c in calls
                        ],
                    }
                )
                for c in calls:
                    yield ToolActivity(c.name)
                    if self.tools is None:
                        yield SystemStatus(f"the model asked for tool {c.name!r}, but no tools are configured")
                        return
                    result = await self._run_tool(c)
                    messages.append({"role": "tool", "tool_call_id": c.id, "content": result})
            yield SystemStatus(f"stopped after {s.max_iterations} tool rounds (agent.max_iterations)")

    async def _run_tool(self, call: _ToolCall) -> str:
        assert self.tools is not None
        try:
            args = json.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            return f"error: invalid arguments for {call.name}: {exc}"
        try:
            return await self.tools.call(call.name, args)
        except Exception as exc:  # a failing tool is the model's problem to handle, not the turn's
            return f"error: tool {call.name} failed: {exc}"

    def _body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        s = self.s
        body: dict[str, Any] = {"model": self.request.model or s.model, "messages": messages, "stream": True}
        if s.stream_usage:
            # OpenAI, vLLM, Ollama and llama.cpp then end the stream with a chunk carrying the round's `usage`.
            body["stream_options"] = {"include_usage": True}
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        if self.tools is not None and (specs := self.tools.specs()):
            body["tools"] = specs
        return body

    async def _stream_round(
        self, client: httpx.AsyncClient, messages: list[dict[str, Any]], rnd: _Round
    ) -> AsyncIterator[ProviderEvent]:
        import httpx  # already loaded by _events(); bound here for the except clause

        body = self._body(messages)
        attempt = 0
        waited = 0.0

        def next_wait(asked: float | None) -> float | None:
            """The wait before the next retry, or None when none may be made (count or total wait used up)."""
            delay = min(asked if asked is not None else self.s.backoff * 2**attempt, self.s.max_backoff)
            if attempt >= self.s.max_retries or waited + delay > self.s.max_retry_wait:
                return None
            return delay

        while True:
            started = False
            try:
                async with client.stream("POST", "/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        message = _error_message(response)
                        if self.s.api_key:  # some endpoints echo the key they refused; the user must not see it
                            message = message.replace(self.s.api_key, "[redacted]")
                        delay = next_wait(_retry_after(response)) if response.status_code in RETRY_STATUSES else None
                        if delay is not None:
                            attempt += 1
                            waited += delay
                            log.warning(
                                "openai: HTTP %s (%s); retry %d in %.1f s",
                                response.status_code,
                                message.replace(self.s.api_key, "[redacted]") if self.s.api_key else message,
                                attempt,
                                delay,
                            )
                            await self._sleep(delay)
                            continue
                        raise ProviderError(f"the model endpoint answered HTTP {response.status_code}: {message}")
                    if response.headers.get("content-type", "").startswith("application/json"):
                        # An endpoint that does not stream answers one chat.completion object: taken whole.
                        text = _apply_completion(await response.aread(), rnd)
                        if text:
                            yield TextDelta(text)
                        return
                    done = False
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        text = _apply_chunk(data, rnd)
                        if text:
                            started = True
                            yield TextDelta(text)
                    if not done and rnd.finish_reason is None:
                        raise ProviderError("the model's stream ended in the middle of the answer")
                    return
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                # `permanent`: the gateway's outbound policy refused the address (gateway/outbound.py); a retry
                # would be refused the same way.
                delay = None if started or getattr(exc, "permanent", False) else next_wait(None)
                if delay is None:
                    raise ProviderError(f"the model endpoint failed: {type(exc).__name__}: {exc}") from exc
                attempt += 1
                waited += delay
                log.warning("openai: %s; retry %d in %.1f s", type(exc).__name__, attempt, delay)
                await self._sleep(delay)

    async def abort(self) -> int:
        # Cancelling the turn closes the HTTP stream at once; no process to kill.
        return 0


def _apply_chunk(data: str, rnd: _Round) -> str:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ProviderError(f"the model sent a chunk that is not JSON: {data[:80]!r}") from exc
    if isinstance(chunk, dict) and "error" in chunk:
        err = chunk["error"]
        raise ProviderError(f"the model reported an error: {err.get('message', err) if isinstance(err, dict) else err}")
    if isinstance(chunk, dict) and (usage := _usage(chunk.get("usage"))) is not None:
        rnd.usage = usage
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            text += delta["content"]
        for tc in delta.get("tool_calls") or []:
            call = rnd.calls.setdefault(int(tc.get("index", 0)), _ToolCall())
            call.id = tc.get("id") or call.id
            fn = tc.get("function") or {}
            call.name = fn.get("name") or call.name
            call.arguments += fn.get("arguments") or ""
        if choice.get("finish_reason"):
            rnd.finish_reason = choice["finish_reason"]
    if text:
        rnd.text.append(text)
    return text


def _usage(value: Any) -> Usage | None:
    """OpenAI's `usage` object (`prompt_tokens`, `completion_tokens`), or None when absent or malformed."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int) or prompt < 0 or completion < 0:
        return None
    return Usage(prompt, completion)


def _apply_completion(raw: bytes, rnd: _Round) -> str:
    """Read a whole (non-streamed) chat.completion into the round; return its text."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ProviderError(f"the model sent an answer that is not JSON: {raw[:80]!r}") from exc
    if not isinstance(body, dict):
        raise ProviderError("the model sent an answer that is not a JSON object")
    if "error" in body:
        err = body["error"]
        raise ProviderError(f"the model reported an error: {err.get('message', err) if isinstance(err, dict) else err}")
    rnd.usage = _usage(body.get("usage"))
    text = ""
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            text += message["content"]
        for index, tc in enumerate(message.get("tool_calls") or []):
            fn = tc.get("function") or {}
            rnd.calls[index] = _ToolCall(tc.get("id") or "", fn.get("name") or "", fn.get("arguments") or "")
        rnd.finish_reason = choice.get("finish_reason") or rnd.finish_reason
    if text:
        rnd.text.append(text)
    return text


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        err = body.get("error", body)
        return str(err.get("message", err) if isinstance(err, dict) else err)[:300]
    except ValueError:
        return response.text[:300] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def preload_httpx() -> None:
    """Import httpx now, for a gateway whose agent uses this provider: its first turn then starts as fast as the
    next ones (every gateway builds the provider, but only these need httpx)."""
    import httpx  # noqa: F401


class OpenAIProvider:
    """Streams from an OpenAI-compatible endpoint; the API key is a secret the caller must redact from logs."""

    name = "openai"

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        tools: ToolBox | None = None,
        context: Callable[[], list[str]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        http_client: HttpClientFactory = plain_client,
    ) -> None:
        self.settings = settings
        self.tools = tools
        self.context = context  # enabled skills' text, read at the start of every turn
        self._sleep = sleep
        self.http_client = http_client

    def info(self) -> ProviderInfo:
        s = self.settings
        local = any(h in s.base_url for h in ("://127.", "://localhost", "://[::1]"))
        available = bool(s.api_key) or local
        models = list(s.models)
        if s.model not in models:
            models.insert(0, s.model)
        return ProviderInfo(
            name="openai",
            models=models,
            default_model=s.model,
            available=available,
            detail=s.base_url if available else f"{s.base_url} (no API key configured)",
        )

    async def probe(self, timeout: float) -> ProbeResult:
        """GET {base_url}/models with the key, as OpenAI, Ollama, llama.cpp's server and vLLM all answer it."""
        import httpx

        s = self.settings
        url = s.base_url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        found = ProbeResult("unreachable", f"{url}: no answer within {timeout:g} s")
        with trio.move_on_after(timeout):  # the whole exchange, whatever httpx's per-phase timeouts allow
            try:
                # The same outbound policy as the turns: an admin account's base URL reaches public addresses only.
                trusted = (s.base_url,) if s.base_url_trusted else ()
                async with self.http_client(trusted=trusted, timeout=timeout) as client:
                    response = await client.get(url, headers=headers)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                found = ProbeResult("unreachable", f"{url}: {type(exc).__name__}: {exc}")
            else:
                if response.status_code == 200:
                    found = ProbeResult("ok", f"{url} answered HTTP 200")
                else:
                    message = _error_message(response)
                    found = ProbeResult("error", f"{url} answered HTTP {response.status_code}: {message}")
        # An endpoint may quote the key it refused: the detail goes to a browser.
        return ProbeResult(found.status, found.detail.replace(s.api_key, "[redacted]")) if s.api_key else found

    def start_turn(self, request: TurnRequest) -> OpenAITurn:
        tools = self.tools.scoped(request.owner) if isinstance(self.tools, ScopedToolBox) else self.tools
        context = self.context() if self.context else ()
        return OpenAITurn(self.settings, request, tools, self._sleep, context, self.http_client)
