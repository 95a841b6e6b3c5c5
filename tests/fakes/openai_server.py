"""A fake OpenAI-compatible endpoint on loopback: real HTTP, OpenAI's real streaming format, scripted replies."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.http_server import serve_app


@dataclass
class Script:
    """What the next request gets: streamed `chunks` (text or tool-call deltas), or an HTTP error."""

    texts: list[str] = field(default_factory=list)
    tool_calls: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (id, name, argument fragments)
    status: int = 200
    error: str = ""
    retry_after: str | None = None
    cut: bool = False  # end the body mid-answer: no finish_reason, no [DONE]
    pause: float = 0.0  # between chunks, to make a stream last
    # (prompt_tokens, completion_tokens): sent as OpenAI does, in a last chunk with no choices when the request asked
    # for it (`stream_options.include_usage`), or in the whole answer when `whole` is set
    usage: tuple[int, int] | None = None
    whole: bool = False  # answer one chat.completion JSON object, as an endpoint that does not stream


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]}


def _completion(script: Script) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(script.texts) or None}
    if script.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": "".join(fragments)}}
            for call_id, name, fragments in script.tool_calls
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if script.tool_calls else "stop"}],
    }
    if script.usage is not None:
        body["usage"] = _usage(script.usage)
    return body


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeOpenAI:
    def __init__(self) -> None:
        self.scripts: deque[Script] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = trio.Event()
        self.base_url = ""
        self.models = ["fake-gpt"]
        self.key: str | None = None  # when set, GET /models refuses any other key with OpenAI's 401
        self.listings: list[dict[str, str]] = []  # the headers of each GET /models

    async def _models(self, request: Request) -> Response:
        self.listings.append(dict(request.headers))
        if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            error = {"message": f"Incorrect API key provided: {given}.", "type": "invalid_request_error"}
            return JSONResponse({"error": {**error, "code": "invalid_api_key"}}, status_code=401)
        data = [{"id": m, "object": "model", "created": 1, "owned_by": "fake"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _completions(self, request: Request) -> Response:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        script = self.scripts.popleft() if self.scripts else Script(texts=["ok"])
        if script.status != 200:
            headers = {"Retry-After": script.retry_after} if script.retry_after else None
            return JSONResponse(
                {"error": {"message": script.error or "failed", "type": "server_error", "code": None}},
                status_code=script.status,
                headers=headers,
            )

        if script.whole:
            return JSONResponse(_completion(script))
        wants_usage = bool((self.requests[-1].get("stream_options") or {}).get("include_usage"))

        async def body() -> AsyncIterator[bytes]:
            try:
                yield _chunk({"role": "assistant", "content": ""})
                for text in script.texts:
                    if script.pause:
                        await trio.sleep(script.pause)
                    yield _chunk({"content": text})
                for index, (call_id, name, fragments) in enumerate(script.tool_calls):
                    first = {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                    yield _chunk({"tool_calls": [first]})
                    for frag in fragments:
                        yield _chunk({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
                if script.cut:
                    return
                yield _chunk({}, "tool_calls" if script.tool_calls else "stop")
                if wants_usage and script.usage is not None:
                    last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "choices": []}
                    yield f"data: {json.dumps({**last, 'usage': _usage(script.usage)})}\n\n".encode()
                yield b"data: [DONE]\n\n"
            except BaseException:
                self.disconnected.set()
                raise

        return StreamingResponse(body(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def start(self, nursery: trio.Nursery) -> str:
        self.base_url = await serve_app(nursery, self.app()) + "/v1"
        return self.base_url
