"""The transcription chain: a loopback Whisper-compatible endpoint, then a `whisper` command, then 501."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.agent.transcribe import TranscribeSettings, configured_backends, transcribe
from gateway.errors import NoTranscriberError, TranscriptionFailedError
from tests.fakes.http_server import serve_app


def whisper_api(status: int = 200) -> Starlette:
    async def handler(request: Request) -> Response:
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        size = len(await upload.read())
        if status != 200:
            return JSONResponse({"error": {"message": "nope"}}, status_code=status)
        return JSONResponse({"text": f" heard {size} bytes with {form['model']} "})

    return Starlette(routes=[Route("/v1/audio/transcriptions", handler, methods=["POST"])])


def fake_whisper_cli(folder: Path) -> Path:
    """A stand-in for openai-whisper's CLI with its real arguments: writes <stem>.txt into --output_dir."""
    script = folder / "whisper"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        "a = sys.argv[1:]\n"
        "out = pathlib.Path(a[a.index('--output_dir') + 1])\n"
        "(out / (pathlib.Path(a[0]).stem + '.txt')).write_text('from the cli ' + a[a.index('--model') + 1])\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    f = tmp_path / "voice.ogg"
    f.write_bytes(b"OggS" + b"\0" * 96)
    return f


async def test_http_backend_first(nursery: trio.Nursery, audio: Path) -> None:
    url = await serve_app(nursery, whisper_api())
    with trio.fail_after(10):
        text, backend = await transcribe(TranscribeSettings(http_url=url + "/v1", whisper_command=""), audio)
    assert (text, backend) == ("heard 100 bytes with whisper-1", "http")


async def test_falls_back_to_the_whisper_command(
    nursery: trio.Nursery, audio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await serve_app(nursery, whisper_api(status=500))
    fake_whisper_cli(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    s = TranscribeSettings(http_url=url + "/v1", whisper_model="tiny")
    assert configured_backends(s) == ["http", "whisper"]
    with trio.fail_after(20):
        text, backend = await transcribe(s, audio)
    assert (text, backend) == ("from the cli tiny", "whisper")


async def test_all_failing_is_a_502_and_none_configured_a_501(nursery: trio.Nursery, audio: Path) -> None:
    url = await serve_app(nursery, whisper_api(status=503))
    with trio.fail_after(10), pytest.raises(TranscriptionFailedError, match="http: the transcription endpoint"):
        await transcribe(TranscribeSettings(http_url=url + "/v1", whisper_command=""), audio)
    with pytest.raises(NoTranscriberError) as info:
        await transcribe(TranscribeSettings(whisper_command="", whisper_cpp_command=""), audio)
    assert info.value.status == 501
