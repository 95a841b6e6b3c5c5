"""The `cli` provider: runs a configured command per turn in its own process group, streams its stdout."""

from __future__ import annotations

import codecs
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial
from typing import Any

import trio
import trio.lowlevel

from actors.providers.base import (
    FinalText,
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

_POLL = 0.005  # seconds between checks that the group is gone: aborts must answer in milliseconds


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields we need follow the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(name))
    return members


async def kill_group(pgid: int, grace: float) -> int:
    """SIGTERM the whole group, wait up to `grace` seconds for it to go, then SIGKILL what is left.

    Returns how many processes the group held. Never raises for a group that is already gone.
    """
    members = group_members(pgid)
    if not members:
        return 0
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return len(members)
    with trio.move_on_after(grace):
        # Grandchildren are not our children: no wait() or event tells us they died, so poll /proc.
        while group_members(pgid):  # noqa: ASYNC110
            await trio.sleep(_POLL)
        return len(members)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    with trio.move_on_after(1.0):
        while group_members(pgid):  # noqa: ASYNC110
            await trio.sleep(_POLL)
    return len(members)


_TEXT_ITEMS = ("agent_message", "assistant_message", "message")
_QUIET_ITEMS = ("reasoning", "todo_list", "error")  # thinking and plans are not tool use


def _item_name(item: Mapping[str, Any]) -> str:
    return str(item.get("name") or item.get("tool") or item.get("tool_name") or item.get("type") or "tool")


class JsonLines:
    """Maps the JSON-lines records of coding-agent CLIs to events, one turn's records at a time.

    Understood: Claude Code `--output-format stream-json` (`assistant` messages, and with
    `--include-partial-messages` the `stream_event` deltas, after which the repeated full `assistant` message is
    skipped), Codex `exec --json` (`item.started`/`item.completed`: `agent_message` text, commands and tool calls),
    Gemini `--output-format stream-json` (`message` with `role`, `tool_use`), and plain `text`/`status` records.
    """

    def __init__(self) -> None:
        self._partial = False  # Claude's stream_event deltas seen: full assistant messages repeat them
        self._started: set[str] = set()  # Codex items already reported when they started

    def parse(self, obj: Mapping[str, Any]) -> list[ProviderEvent]:
        kind = obj.get("type")
        item = obj.get("item")
        if kind == "stream_event" and isinstance(obj.get("event"), dict):
            return self._stream_event(obj["event"])
        if kind == "assistant" and isinstance(obj.get("message"), dict):
            return [] if self._partial else self._content(obj["message"].get("content"))
        if kind in ("item.started", "item.completed") and isinstance(item, dict):
            return self._item(kind, item)
        if kind in ("tool_use", "tool_call"):
            return [ToolActivity(_item_name(obj))]
        if kind in ("text", "text_delta", "content_block_delta", "message"):
            if obj.get("role") not in (None, "assistant"):
                return []  # Gemini repeats the user's prompt as a message
            delta = obj.get("delta")
            text = obj.get("text") or obj.get("content") or obj.get("data")
            if isinstance(delta, dict):
                text = delta.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind in ("system", "status"):
            status = obj.get("subtype") or obj.get("message") or obj.get("status")
            return [SystemStatus(str(status) if status is not None else None)]
        if kind in ("error", "turn.failed"):
            error = obj.get("error")
            message = error.get("message") if isinstance(error, dict) else obj.get("message")
            return [SystemStatus(f"error: {message}" if message else "error")]
        if kind in ("result", "turn.completed"):
            out: list[ProviderEvent] = []
            if kind == "result" and isinstance(obj.get("result"), str):
                out.append(FinalText(obj["result"]))
            if (usage := _usage(obj)) is not None:
                out.append(usage)
            return out
        return []

    def _content(self, blocks: object) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                out.append(TextDelta(block["text"]))
            elif block.get("type") == "tool_use":
                out.append(ToolActivity(str(block.get("name") or "tool")))
        return out

    def _stream_event(self, event: Mapping[str, Any]) -> list[ProviderEvent]:
        self._partial = True
        kind = event.get("type")
        if kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            text = event["delta"].get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            block = event["content_block"]
            if block.get("type") in ("tool_use", "server_tool_use"):
                return [ToolActivity(str(block.get("name") or "tool"))]
        return []

    def _item(self, kind: str, item: Mapping[str, Any]) -> list[ProviderEvent]:
        item_type = item.get("type") or item.get("item_type")
        if item_type in _TEXT_ITEMS:
            text = item.get("text")
            # Codex sends a message whole when it completes; nothing streams before that.
            return [TextDelta(text)] if kind == "item.completed" and isinstance(text, str) and text else []
        if item_type in _QUIET_ITEMS:
            return []
        ident = str(item.get("id") or "")
        if kind == "item.started":
            if ident:
                self._started.add(ident)
            return [ToolActivity(_item_name(item))]
        if ident and ident in self._started:
            return []  # reported when it started
        return [ToolActivity(_item_name(item))]  # e.g. a file change, reported only once done


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _usage(obj: Mapping[str, Any]) -> Usage | None:
    """The token counts a CLI reports at the end of a turn: Claude Code's `result.usage` (its cache reads and
    writes are input too), Codex's `turn.completed.usage` (its cached tokens are part of `input_tokens`) and
    Gemini's `result.stats`; None when the record has none or they are not counts."""
    counts = obj.get("usage") if isinstance(obj.get("usage"), dict) else obj.get("stats")
    if not isinstance(counts, dict):
        return None
    tokens_in, tokens_out = _count(counts.get("input_tokens")), _count(counts.get("output_tokens"))
    if tokens_in is None or tokens_out is None:
        return None
    for cache in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        tokens_in += _count(counts.get(cache)) or 0
    return Usage(tokens_in, tokens_out)


def parse_json_line(obj: Mapping[str, Any]) -> list[ProviderEvent]:
    """Map one JSON-lines record on its own (no state carried from earlier records); see `JsonLines`."""
    return JsonLines().parse(obj)


class CliTurn:
    """One run of the command. `abort()` kills its whole process group and counts the processes."""

    def __init__(self, argv: list[str], cwd: str | None, env: dict[str, str], grace: float, stdin: bytes | None):
        self._argv = argv
        self._cwd = cwd
        self._env = env
        self._grace = grace
        self._stdin = stdin
        self._proc: trio.Process | None = None
        self._aborted = False
        self._records = JsonLines()

    async def events(self) -> AsyncIterator[ProviderEvent]:
        if not self._argv:
            raise ProviderError("the cli provider has no command; set providers.cli.argv")
        # stderr goes to a file, not a pipe: nothing has to drain it while we stream stdout.
        errfile = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            try:
                proc = await trio.lowlevel.open_process(
                    self._argv,
                    stdin=subprocess.PIPE if self._stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=errfile,
                    cwd=self._cwd,
                    env=self._env,
                    start_new_session=True,  # its own process group, so abort kills grandchildren too
                )
            except OSError as exc:
                raise ProviderError(f"cannot run {self._argv[0]!r}: {exc.strerror}") from exc
            self._proc = proc
            if self._stdin is not None:
                assert proc.stdin is not None
                try:
                    await proc.stdin.send_all(self._stdin)
                except trio.BrokenResourceError:
                    pass  # the command does not read its stdin: fine
                await proc.stdin.aclose()
            assert proc.stdout is not None
            # Plain output streams as it comes (partial lines too); JSON lines are parsed line by line. The first
            # non-blank bytes decide which, as coding-agent CLIs in stream-json mode start with a JSON object.
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            buffer = b""
            json_mode: bool | None = None
            while True:
                chunk = await proc.stdout.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
                if json_mode is None:
                    head = buffer.lstrip()
                    if not head:
                        continue
                    json_mode = head.startswith(b"{")
                if not json_mode:
                    text = decoder.decode(buffer)
                    buffer = b""
                    if text:
                        yield TextDelta(text)
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    for event in self._json_line(line):
                        yield event
            if json_mode:
                for event in self._json_line(buffer):
                    yield event
            elif text := decoder.decode(buffer, final=True):
                yield TextDelta(text)
            code = await proc.wait()
            if code != 0 and not self._aborted:
                errfile.seek(0)
                tail = errfile.read()[-2000:].decode("utf-8", "replace").strip()
                raise ProviderError(f"{os.path.basename(self._argv[0])} exited with status {code}: {tail}".rstrip(": "))
        finally:
            errfile.close()
            proc_ = self._proc
            if proc_ is not None and proc_.poll() is None:
                # Cancelled or failed while the command still runs: never leave its group behind.
                try:
                    os.killpg(proc_.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _json_line(self, line: bytes) -> list[ProviderEvent]:
        text = line.decode("utf-8", "replace")
        if not text.strip():
            return []
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return self._records.parse(obj)
        return [TextDelta(text + "\n")]  # a plain line among JSON lines: shown as it is

    async def abort(self) -> int:
        self._aborted = True
        proc = self._proc
        if proc is None:
            return 0
        killed = await kill_group(proc.pid, self._grace)
        if proc.poll() is None:
            with trio.move_on_after(1.0):
                await proc.wait()
        return killed


class CliProvider:
    """Runs `argv` per turn; `{prompt}` in argv is replaced by the prompt, else the prompt goes to stdin."""

    name = "cli"

    def __init__(
        self,
        argv: Sequence[str],
        *,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        grace: float = 2.0,
    ) -> None:
        self.argv = list(argv)
        self.workdir = workdir
        self.env = dict(env or {})
        self.grace = grace

    def info(self) -> ProviderInfo:
        if not self.argv:
            return ProviderInfo(name="cli", available=False, detail="set providers.cli.argv")
        return ProviderInfo(name="cli", models=["cli"], default_model="cli", detail=os.path.basename(self.argv[0]))

    async def probe(self, timeout: float) -> ProbeResult:
        """Whether the command can be run: found on PATH (or at its path) and executable. It is not started."""
        if not self.argv:
            return ProbeResult("unreachable", "no command: set providers.cli.argv")
        path = self.env.get("PATH", os.environ.get("PATH"))
        found = await trio.to_thread.run_sync(partial(shutil.which, self.argv[0], path=path))
        if found is None:
            return ProbeResult("unreachable", f"{self.argv[0]!r} is not an executable file or a command on PATH")
        return ProbeResult("ok", f"runs {found}")

    def start_turn(self, request: TurnRequest) -> CliTurn:
        uses_arg = any("{prompt}" in a for a in self.argv)
        argv = [a.replace("{prompt}", request.prompt) for a in self.argv] if uses_arg else list(self.argv)
        # The gateway's own settings (GATEWAY_*: tokens, API keys) are not the agent's business: an agent told to
        # print its environment must not hand them to whoever is chatting. providers.cli.env adds what it needs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | self.env
        stdin = None if uses_arg else request.prompt.encode()
        return CliTurn(argv, self.workdir, env, self.grace, stdin)
