"""Speech to text through a chain of backends: a Whisper-compatible HTTP endpoint, then `whisper` or whisper.cpp."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import msgspec
import trio

from gateway.errors import GatewayError, NoTranscriberError, TranscriptionFailedError
from gateway.outbound import OutboundPolicy

log = logging.getLogger("gateway.transcribe")


class TranscribeSettings(msgspec.Struct, frozen=True):
    http_url: str = ""  # base of an OpenAI-compatible audio API, e.g. http://127.0.0.1:8080/v1
    http_api_key: str = ""
    http_model: str = "whisper-1"
    whisper_command: str = "whisper"  # openai-whisper's CLI, used when found on PATH
    whisper_model: str = "base"
    whisper_cpp_command: str = "whisper-cli"  # whisper.cpp's CLI, used when found and a model is set
    whisper_cpp_model: str = ""
    timeout: float = 300.0


def configured_backends(s: TranscribeSettings) -> list[str]:
    """The backends that would be tried, in order (for status and the 501 message)."""
    out = []
    if s.http_url:
        out.append("http")
    if s.whisper_command and shutil.which(s.whisper_command):
        out.append("whisper")
    if s.whisper_cpp_command and s.whisper_cpp_model and shutil.which(s.whisper_cpp_command):
        out.append("whisper.cpp")
    return out


async def _http(s: TranscribeSettings, audio: Path) -> str:
    import httpx  # loaded by the first transcription over HTTP, not at start

    headers = {"Authorization": f"Bearer {s.http_api_key}"} if s.http_api_key else {}
    # http_url comes from the config file, the owner's: it may be private (a whisper server on the LAN); no
    # redirect is followed, so nothing else is reached.
    client = OutboundPolicy().client(trusted=[s.http_url], timeout=s.timeout, headers=headers)
    try:
        async with client:
            data = await trio.Path(audio).read_bytes()
            r = await client.post(
                s.http_url.rstrip("/") + "/audio/transcriptions",
                files={"file": (audio.name, data, "application/octet-stream")},
                data={"model": s.http_model, "response_format": "json"},
            )
    except httpx.HTTPError as exc:
        raise TranscriptionFailedError(f"{type(exc).__name__}: {exc}") from exc
    if r.status_code != 200:
        raise TranscriptionFailedError(f"the transcription endpoint answered HTTP {r.status_code}")
    text = r.json().get("text")
    if not isinstance(text, str):
        raise TranscriptionFailedError("the transcription endpoint answered without text")
    return text.strip()


async def _run(argv: list[str], timeout: float) -> None:
    with trio.fail_after(timeout):
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise TranscriptionFailedError(f"{Path(argv[0]).name} exited with {result.returncode}: {tail[0][:200]}")


async def _whisper(s: TranscribeSettings, audio: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="gw-whisper-") as out:
        await _run(
            [s.whisper_command, str(audio), "--model", s.whisper_model, "--output_format", "txt", "--output_dir", out],
            s.timeout,
        )
        return (Path(out) / (audio.stem + ".txt")).read_text().strip()


async def _whisper_cpp(s: TranscribeSettings, audio: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="gw-whispercpp-") as out:
        prefix = Path(out) / "result"
        await _run(
            [s.whisper_cpp_command, "-m", s.whisper_cpp_model, "-f", str(audio), "-otxt", "-of", str(prefix)], s.timeout
        )
        return prefix.with_suffix(".txt").read_text().strip()


async def transcribe(s: TranscribeSettings, audio: Path) -> tuple[str, str]:
    """Try each configured backend in order; return (text, backend). Raises NoTranscriberError (501) when none
    is configured and TranscriptionFailedError (502) when all configured ones failed."""
    backends = configured_backends(s)
    if not backends:
        raise NoTranscriberError(
            "no transcription backend is configured: set [transcribe] http_url, or install `whisper` "
            "or whisper.cpp (with [transcribe] whisper_cpp_model)"
        )
    errors = []
    for name in backends:
        fn = {"http": _http, "whisper": _whisper, "whisper.cpp": _whisper_cpp}[name]
        try:
            return await fn(s, audio), name
        except (GatewayError, OSError, trio.TooSlowError) as exc:
            msg = exc.message if isinstance(exc, GatewayError) else f"{type(exc).__name__}: {exc}"
            log.warning("transcription with %s failed: %s", name, msg)
            errors.append(f"{name}: {msg}")
    raise TranscriptionFailedError("every transcription backend failed: " + "; ".join(errors))
