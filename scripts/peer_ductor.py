"""The streaming peer of scripts/bench_peer.py: ductor 0.20.1's own ApiServer with an echo message handler.

Run as `python scripts/peer_ductor.py <port> <token> <log_dir>`; prints `listening on http://127.0.0.1:<port>`.
The handler is wired exactly as ductor's orchestrator wires `Orchestrator.handle_message_streaming`
(`ductor_bot.orchestrator.lifecycle`): called with the session key, the text and the streaming callbacks, it
calls `on_text_delta` once per word (as `CLIService.execute_streaming` does per `AssistantTextDelta`) and returns
an `OrchestratorResult`, which the ApiServer sends as the `result` frame.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ductor_bot.api.server import ApiServer
from ductor_bot.config import ApiConfig
from ductor_bot.logging_config import setup_logging
from ductor_bot.orchestrator.registry import OrchestratorResult
from ductor_bot.session.key import SessionKey

# The gateway's echo provider splits the same way (actors/providers/echo.py): each piece keeps its leading
# whitespace, so both servers send the same 3000 `text_delta` frames with the same text.
_WORDS = re.compile(r"\s*\S+|\s+$")


async def echo_streaming(
    key: SessionKey,
    text: str,
    *,
    on_text_delta: Callable[[str], Awaitable[None]] | None = None,
    **_callbacks: Any,
) -> OrchestratorResult:
    """Stream `text` back word by word, then return it whole, as a provider's turn would."""
    for piece in _WORDS.findall(text):
        # The gateway's echo provider yields to its event loop once per word (trio.lowlevel.checkpoint); so does
        # this one, so that neither side's provider sends a burst the other's cannot.
        await asyncio.sleep(0)
        if on_text_delta is not None:
            await on_text_delta(piece)
    return OrchestratorResult(text=text)


async def abort(chat_id: int) -> int:
    return 0


async def main(port: int, token: str, log_dir: Path) -> None:
    setup_logging(log_dir=log_dir)  # ductor's own logging set-up (console and rotating file, INFO)
    server = ApiServer(ApiConfig(enabled=True, host="127.0.0.1", port=port, token=token, allow_public=True))
    server.set_message_handler(echo_streaming)
    server.set_abort_handler(abort)
    await server.start()
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
