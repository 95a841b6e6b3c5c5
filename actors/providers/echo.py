"""The built-in `echo` provider: deterministic, streams the prompt back word by word."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import trio

from actors.providers.base import ProbeResult, ProviderEvent, ProviderInfo, TextDelta, TurnRequest

_WORDS = re.compile(r"\s*\S+|\s+$")


def split_words(text: str) -> list[str]:
    """Split text into word pieces that keep their leading whitespace, so joining them gives the text back."""
    return _WORDS.findall(text)


class EchoTurn:
    def __init__(self, text: str, delay: float) -> None:
        self._text = text
        self._delay = delay

    async def events(self) -> AsyncIterator[ProviderEvent]:
        for piece in split_words(self._text):
            if self._delay > 0:
                await trio.sleep(self._delay)
            else:
                await trio.lowlevel.checkpoint()
            yield TextDelta(piece)

    async def abort(self) -> int:
        return 0


class EchoProvider:
    """Echoes the prompt; `delay` seconds between words make streaming and abort observable."""

    name = "echo"

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay

    def info(self) -> ProviderInfo:
        return ProviderInfo(name="echo", models=["echo"], default_model="echo", detail="streams the input back")

    async def probe(self, timeout: float) -> ProbeResult:
        return ProbeResult("ok", "built in: nothing to reach")

    def start_turn(self, request: TurnRequest) -> EchoTurn:
        return EchoTurn(request.prompt, self.delay)
