"""A fake A2A agent on loopback: its card at the well-known path, JSON-RPC 2.0 `message/send` and `message/stream`
(SSE) at `/rpc`, scripted answers; every request it got is kept."""

from __future__ import annotations

import json
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
class AgentScript:
    """How the agent answers: `reply` (its text; `pieces` for the streamed chunks), or a JSON-RPC `error`, or a
    task that `fails`. `as_task`: a Task with an artifact rather than a Message."""

    reply: str = ""
    pieces: list[str] = field(default_factory=list)
    error: tuple[int, str] | None = None
    fails: str = ""
    as_task: bool = True
    status: int = 200
    padding: int = 0  # extra bytes of text: an answer too large for the gateway to take


class FakeA2AAgent:
    def __init__(self, name: str = "Travel Planner", *, streaming: bool = False, url: str | None = None) -> None:
        self.name = name
        self.streaming = streaming
        self.url = url  # the card's `url`; None: this server's own /rpc
        self.script = AgentScript(reply="ok")
        self.requests: list[dict[str, Any]] = []
        self.received = trio.Event()
        self.base_url = ""

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": "Plans trips by train.",
            "url": self.url or f"{self.base_url}/rpc",
            "version": "1.0.0",
            "protocolVersion": "0.3.0",
            "capabilities": {"streaming": self.streaming},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [{"id": "route", "name": "Route finder", "description": "Finds train routes between cities."}],
        }

    async def _card(self, request: Request) -> Response:
        return JSONResponse(self.card())

    def _text(self) -> str:
        return self.script.reply + "x" * self.script.padding

    def _result(self, request_id: Any) -> dict[str, Any]:
        s = self.script
        if s.error is not None:
            return {"jsonrpc": "2.0", "id": request_id, "error": {"code": s.error[0], "message": s.error[1]}}
        part = {"kind": "text", "text": self._text()}
        if s.fails:
            status = {"state": "failed", "message": {"kind": "message", "role": "agent", "messageId": "m-f",
                                                      "parts": [{"kind": "text", "text": s.fails}]}}  # fmt: skip
            result: dict[str, Any] = {"kind": "task", "id": "t1", "contextId": "c1", "status": status}
        elif s.as_task:
            result = {"kind": "task", "id": "t1", "contextId": "c1", "status": {"state": "completed"},
                      "artifacts": [{"artifactId": "a1", "parts": [part]}]}  # fmt: skip
        else:
            result = {"kind": "message", "role": "agent", "messageId": "m1", "parts": [part]}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    async def _rpc(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.received.set()
        if self.script.status != 200:
            return Response("agent down", status_code=self.script.status)
        if body.get("method") == "message/send":
            return JSONResponse(self._result(body.get("id")))
        if body.get("method") != "message/stream":
            error = {"code": -32601, "message": "Method not found"}
            return JSONResponse({"jsonrpc": "2.0", "id": body.get("id"), "error": error})
        request_id = body.get("id")

        def event(result: dict[str, Any]) -> bytes:
            return f"data: {json.dumps({'jsonrpc': '2.0', 'id': request_id, 'result': result})}\n\n".encode()

        async def stream() -> AsyncIterator[bytes]:
            if self.script.error is not None or self.script.fails:
                yield f"data: {json.dumps(self._result(request_id))}\n\n".encode()
                return
            yield event({"kind": "task", "id": "t1", "contextId": "c1", "status": {"state": "submitted"}})
            working = {"state": "working", "message": {"kind": "message", "role": "agent", "messageId": "m-w",
                                                       "parts": [{"kind": "text", "text": "looking..."}]}}  # fmt: skip
            yield event({"kind": "status-update", "taskId": "t1", "contextId": "c1", "status": working, "final": False})
            yield b": keepalive\n\n"
            for n, piece in enumerate(self.script.pieces):
                artifact = {"artifactId": "a1", "parts": [{"kind": "text", "text": piece}]}
                yield event({"kind": "artifact-update", "taskId": "t1", "contextId": "c1", "artifact": artifact,
                             "append": n > 0, "lastChunk": n == len(self.script.pieces) - 1})  # fmt: skip
            done = {"kind": "status-update", "taskId": "t1", "contextId": "c1", "status": {"state": "completed"}}
            yield event({**done, "final": True})

        return StreamingResponse(stream(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/agent-card.json", self._card, methods=["GET"]),
                Route("/rpc", self._rpc, methods=["POST"]),
            ]
        )

    async def start(self, nursery: trio.Nursery) -> str:
        self.base_url = await serve_app(nursery, self.app())
        return self.base_url
