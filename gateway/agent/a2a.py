"""A2A agents: fetch and validate an agent's card; offer each enabled agent to the model as a tool (JSON-RPC)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING, Any

import trio

from gateway.core import Runtime
from gateway.errors import A2ACardError
from gateway.outbound import OutboundPolicy, OutboundRefusedError
from storage import skills as a2a_db
from storage.ids import new_id
from storage.skills import A2AServerRow

if TYPE_CHECKING:
    import httpx

CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")  # current path first, then the older one
MAX_CARD_BYTES = 256 * 1024


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def card_to_row(base_url: str, card: dict[str, Any]) -> A2AServerRow:
    """Validate an agent card and project the fields the listing shows."""
    name = card.get("name")
    if not isinstance(name, str) or not name.strip():
        raise A2ACardError("the agent card has no name")
    caps = card.get("capabilities") if isinstance(card.get("capabilities"), dict) else {}
    assert isinstance(caps, dict)
    return A2AServerRow(
        id=new_id(),
        base_url=base_url,
        name=name.strip()[:200],
        description=str(card.get("description") or "")[:2000],
        input_modes=_strings(card.get("defaultInputModes")),
        output_modes=_strings(card.get("defaultOutputModes")),
        streaming=bool(caps.get("streaming")),
        push_notifications=bool(caps.get("pushNotifications")),
        card=card,
    )


async def fetch_card(base_url: str, *, client: httpx.AsyncClient) -> A2AServerRow:
    """GET the agent card (current well-known path, then the legacy one); raise A2ACardError on any failure."""
    if not base_url.startswith(("http://", "https://")):
        raise A2ACardError("base_url must start with http:// or https://")
    import httpx  # the caller made the client; bound here for the except clause

    base = base_url.rstrip("/")
    last = ""
    for path in CARD_PATHS:
        try:
            r = await client.get(base + path)
        except OutboundRefusedError as exc:
            raise A2ACardError(f"cannot fetch the agent card: {exc}", status=403, code="OUTBOUND_REFUSED") from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # InvalidURL is no HTTPError
            raise A2ACardError(f"cannot reach {base}: {type(exc).__name__}") from None
        if r.status_code == 404:
            last = f"{path} not found"
            continue
        if r.status_code != 200:
            raise A2ACardError(f"{base}{path} answered HTTP {r.status_code}")
        if len(r.content) > MAX_CARD_BYTES:
            raise A2ACardError("the agent card is too large")
        try:
            card = r.json()
        except ValueError:
            raise A2ACardError(f"{base}{path} is not JSON") from None
        if not isinstance(card, dict):
            raise A2ACardError("the agent card must be a JSON object")
        return card_to_row(base, card)
    raise A2ACardError(f"no agent card at {base} ({last})")


# ---- A2A agents as the model's tools ----

TOOL_PREFIX = "a2a__"
CALL_TIMEOUT = 120.0  # the whole call, streamed or not: a tool that never answers must not hold the turn
CONNECT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 1024 * 1024  # what an agent may send for one call (the JSON-RPC body, or the SSE stream)
MAX_RESULT_CHARS = 32_000  # what reaches the model of it
_FAILED = {"failed", "rejected", "canceled"}
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
PARAMETERS = {
    "type": "object",
    "properties": {"message": {"type": "string", "description": "What to ask or tell the agent, in plain words"}},
    "required": ["message"],
}


class A2ACallError(Exception):
    """An agent's call went wrong; the message goes back to the model as the tool's error."""


def tool_name(row: A2AServerRow, taken: Collection[str] = ()) -> str:
    """`a2a__<card name>` within OpenAI's `^[a-zA-Z0-9_-]{1,64}$`; a clash gets the end of the agent's id."""
    slug = _UNSAFE.sub("_", row.name).strip("_").lower() or "agent"
    name = (TOOL_PREFIX + slug)[:64]
    if name in taken:
        name = (TOOL_PREFIX + slug)[:57] + "_" + row.id[-6:]
    return name


def describe(row: A2AServerRow) -> str:
    """The card's description, then its skills (name: description): what the model reads to choose the tool."""
    lines = [f"Ask the remote agent {row.name!r} (A2A)." + (f" {row.description}" if row.description else "")]
    skills = row.card.get("skills")
    if isinstance(skills, list):
        for skill in skills[:20]:
            if isinstance(skill, dict) and (skill.get("name") or skill.get("description")):
                lines.append(f"- {skill.get('name') or skill.get('id') or ''}: {skill.get('description') or ''}")
    return "\n".join(lines)[:1024]


def agent_url(row: A2AServerRow) -> str:
    """Where JSON-RPC goes: the card's `url`, else the base URL the agent was registered with."""
    url = row.card.get("url")
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else row.base_url


def _texts(parts: Any) -> list[str]:
    out: list[str] = []
    if isinstance(parts, list):
        for part in parts:
            # `kind` since A2A 0.3; `type` before it.
            if isinstance(part, dict) and (part.get("kind") or part.get("type")) == "text":
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
    return out


def _message_text(message: Any) -> str:
    return "".join(_texts(message.get("parts"))) if isinstance(message, dict) else ""


class Answer:
    """What one call gathered: a Message, or a Task with its artifacts and status, from one result or a stream."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.artifacts: dict[str, list[str]] = {}  # artifactId -> its text parts, in order
        self.status_text = ""
        self.state = ""

    def _artifact(self, artifact: Any, *, append: bool) -> None:
        if not isinstance(artifact, dict):
            return
        key = str(artifact.get("artifactId") or len(self.artifacts))
        texts = _texts(artifact.get("parts"))
        if append and key in self.artifacts:
            self.artifacts[key].extend(texts)
        else:
            self.artifacts[key] = texts

    def _status(self, status: Any) -> None:
        if isinstance(status, dict):
            self.state = str(status.get("state") or self.state)
            text = _message_text(status.get("message"))
            if text:
                self.status_text = text

    def add(self, result: Any) -> None:
        """One JSON-RPC result: a Message, a Task, or (streaming) a status or artifact update."""
        if not isinstance(result, dict):
            raise A2ACallError("the agent's result is not an object")
        kind = result.get("kind")
        if kind == "message" or (kind is None and "parts" in result):
            self.messages.append(_message_text(result))
        elif kind == "status-update":
            self._status(result.get("status"))
        elif kind == "artifact-update":
            self._artifact(result.get("artifact"), append=bool(result.get("append")))
        elif kind == "task" or "status" in result:
            for artifact in result.get("artifacts") or []:
                self._artifact(artifact, append=False)
            self._status(result.get("status"))
        else:
            raise A2ACallError(f"the agent answered a result of unknown kind {kind!r}")

    def text(self) -> str:
        if self.state in _FAILED:
            raise A2ACallError(
                f"the agent's task ended {self.state}" + (f": {self.status_text}" if self.status_text else "")
            )
        body = "\n".join("".join(parts) for parts in self.artifacts.values() if parts)
        body = body or self.status_text or "\n".join(m for m in self.messages if m)
        if self.state in ("input-required", "auth-required"):
            body += f"\n[the agent's task is {self.state}]"
        if not body.strip():
            return "(the agent answered with no text)"
        if len(body) > MAX_RESULT_CHARS:
            body = body[:MAX_RESULT_CHARS] + "\n[cut: the answer was longer]"
        return body


def _result_of(envelope: Any) -> Any:
    """The `result` of a JSON-RPC 2.0 response, or A2ACallError with the agent's error."""
    if not isinstance(envelope, dict):
        raise A2ACallError("the agent's answer is not a JSON-RPC response")
    error = envelope.get("error")
    if error is not None:
        if isinstance(error, dict):
            raise A2ACallError(f"the agent answered error {error.get('code')}: {str(error.get('message', ''))[:500]}")
        raise A2ACallError("the agent answered an error")
    if "result" not in envelope:
        raise A2ACallError("the agent's answer has no result")
    return envelope["result"]


async def _bounded_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in response.aiter_bytes():
        seen += len(chunk)
        if seen > MAX_RESPONSE_BYTES:
            raise A2ACallError(f"the agent's answer is larger than {MAX_RESPONSE_BYTES} bytes")
        yield chunk


async def _read_stream(response: httpx.Response, answer: Answer) -> None:
    """Follow an SSE body: each event's `data` is a JSON-RPC response whose result is one streaming event."""
    buf = b""
    async for chunk in _bounded_chunks(response):
        buf += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
            if not data:
                continue  # a comment (keepalive) or an event with no data
            try:
                envelope = json.loads(data)
            except ValueError:
                raise A2ACallError("the agent's stream carried an event that is not JSON") from None
            answer.add(_result_of(envelope))
            result = envelope.get("result")
            if isinstance(result, dict) and result.get("final") is True:
                return


class A2AAgents:
    """The registered agents, as the model's tools: `reload` after each change, `scoped(owner)` per turn."""

    def __init__(
        self, policy: OutboundPolicy, *, hidden: Callable[[str | None], Collection[str]] | None = None
    ) -> None:
        self.policy = policy
        self.hidden = hidden
        self.rows: list[A2AServerRow] = []

    def reload(self, rows: list[A2AServerRow]) -> None:
        self.rows = rows

    def scoped(self, owner: str | None) -> A2ATools:
        return A2ATools(self, owner)

    def specs(self) -> list[dict[str, Any]]:
        return self.scoped(None).specs()

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        return await self.scoped(None).call(name, arguments)

    async def send(self, row: A2AServerRow, text: str) -> str:
        """One call: `message/send`, or `message/stream` for an agent whose card says it streams; the text it
        answered. Raises A2ACallError for anything that went wrong (the model is told, the turn goes on)."""
        try:
            with trio.fail_after(CALL_TIMEOUT):
                return await self._send(row, text)
        except trio.TooSlowError:
            raise A2ACallError(f"the agent did not answer within {CALL_TIMEOUT:.0f} s") from None

    async def _send(self, row: A2AServerRow, text: str) -> str:
        import httpx

        method = "message/stream" if row.streaming else "message/send"
        message = {"kind": "message", "role": "user", "parts": [{"kind": "text", "text": text}], "messageId": new_id()}
        body = {"jsonrpc": "2.0", "id": new_id(), "method": method, "params": {"message": message}}
        accept = "text/event-stream" if row.streaming else "application/json"
        # The agent's address may be private only when the owner registered it, and only at the origin he gave.
        trusted = [row.base_url] if row.url_by_owner else []
        timeout = httpx.Timeout(CALL_TIMEOUT, connect=CONNECT_TIMEOUT)
        answer = Answer()
        try:
            async with (
                self.policy.client(trusted=trusted, timeout=timeout, follow_redirects=False) as client,
                client.stream("POST", agent_url(row), json=body, headers={"Accept": accept}) as response,
            ):
                if response.status_code != 200:
                    raise A2ACallError(f"the agent answered HTTP {response.status_code}")
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    await _read_stream(response, answer)
                else:
                    raw = b"".join([chunk async for chunk in _bounded_chunks(response)])
                    try:
                        envelope = json.loads(raw)
                    except ValueError:
                        raise A2ACallError("the agent's answer is not JSON") from None
                    answer.add(_result_of(envelope))
        except OutboundRefusedError as exc:
            raise A2ACallError(str(exc)) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise A2ACallError(f"cannot reach the agent: {type(exc).__name__}") from None
        return answer.text()


class A2ATools:
    """What one turn of `owner`'s sees: the enabled agents the owner has not switched off (read at each round)."""

    def __init__(self, agents: A2AAgents, owner: str | None) -> None:
        self.agents = agents
        self.owner = owner

    def _index(self) -> dict[str, A2AServerRow]:
        off = self.agents.hidden(self.owner) if self.agents.hidden is not None else ()
        index: dict[str, A2AServerRow] = {}
        for row in self.agents.rows:
            if row.enabled and row.id not in off:
                index[tool_name(row, index)] = row
        return index

    def specs(self) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {"name": name, "description": describe(row), "parameters": PARAMETERS}}
            for name, row in self._index().items()
        ]

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        row = self._index().get(name)
        if row is None:
            raise LookupError(f"no such tool {name!r}")
        text = arguments.get("message")
        if not isinstance(text, str) or not text.strip():
            raise A2ACallError("give the agent a `message` (a non-empty string)")
        return await self.agents.send(row, text)


async def reload_agents(runtime: Runtime) -> None:
    """Read the registered agents again (after a change over the API): the next round of every turn sees it."""
    agents = runtime.services.a2a
    if agents is not None:
        agents.reload(await runtime.store.call(a2a_db.list_a2a))
