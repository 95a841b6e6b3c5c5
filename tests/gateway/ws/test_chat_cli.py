"""`gateway chat` and `gateway token` as real processes against a real gateway."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from gateway.ws.identity import identity_fingerprint
from tests.conftest import RunningGateway, make_config, start_gateway


def chat_argv(gw: RunningGateway, *args: str) -> list[str]:
    # A config naming the gateway's data folder: the chat keeps its resume state there, not in the real home.
    config_file = gw.runtime.paths.config_file
    config_file.write_text(f'[storage]\ndata_dir = "{gw.runtime.paths.data_dir}"\n')
    return [
        *(sys.executable, "-m", "gateway", "chat", "--config", str(config_file)),
        *("--url", gw.ws_url + "/ws", "--token", gw.token, *args),
    ]


async def test_chat_sends_one_message_and_prints_the_answer(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        r = await trio.run_process(chat_argv(gateway, "-m", "hello from a terminal"), capture_stdout=True)
        assert r.stdout.decode() == "hello from a terminal\n"
        r = await trio.run_process(
            chat_argv(gateway, "--v2", "--resume", "0", "-m", "again"),
            capture_stdout=True,
            capture_stderr=True,
        )
        # --resume 0 replays the first turn before the new one's answer.
        assert r.stdout.decode() == "hello from a terminal\nagain\n", r.stderr.decode()


async def test_ctrl_c_aborts_the_running_turn_with_one_line(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, providers={"echo": {"delay_ms": 20}})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            chat_argv(gw), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            await proc.stdin.send_all((" ".join(["word"] * 1000) + "\n").encode())
            assert (await proc.stdout.receive_some(100)).startswith(b"word")
            proc.send_signal(signal.SIGINT)
            err = b""
            while b"[aborted: 0 process(es) killed]" not in err:  # abort_ok, printed by the chat
                chunk = await proc.stderr.receive_some(1000)
                assert chunk, "chat ended without reporting the abort: " + err.decode()
                err += chunk
            # The next turn's answer comes after everything about the aborted one (its "aborted" status included).
            await proc.stdin.send_all(b"next one\n")
            out = b""
            while not out.endswith(b"next one\n"):
                chunk = await proc.stdout.receive_some(1000)
                assert chunk, out.decode()
                out += chunk
            await proc.stdin.aclose()  # end of input: the chat exits
            while chunk := await proc.stderr.receive_some(1000):
                err += chunk
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:  # a failed or timed-out test must not leave it running
                proc.kill()
        await gw.stop()
    told = [line for line in err.decode().splitlines() if "abort" in line and not line.startswith("type a message")]
    assert told == ["[aborted: 0 process(es) killed]"], err.decode()


async def test_token_prints_the_identity_fingerprint(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    with trio.fail_after(30):
        r = await trio.run_process(
            [sys.executable, "-m", "gateway", "token", "--config", str(config_file)],
            capture_stdout=True,
            capture_stderr=True,
        )
    _, paths = make_config(tmp_path)
    fingerprint = identity_fingerprint(paths)
    assert fingerprint in r.stderr.decode()
    assert len(r.stdout.decode().strip()) >= 32  # stdout stays the bare token, for scripts
    assert (paths.data_dir / "identity.key").stat().st_mode & 0o777 == 0o600


async def test_bare_resume_replays_only_what_this_chat_missed(gateway: RunningGateway) -> None:
    """`--resume` without a number starts after the last seq this command saw (kept in the data folder)."""
    from tests.gateway.wshelpers import client, until

    argv = chat_argv(gateway, "--chat", "21")
    with trio.fail_after(40):
        r = await trio.run_process([*argv, "-m", "first"], capture_stdout=True)
        assert r.stdout.decode() == "first\n"
        async with client(gateway, chat_id=21) as other:  # another client talks while this chat is away
            await other.send_message("missed meanwhile")
            await until(other, "result")
        r = await trio.run_process([*argv, "--resume", "-m", "third"], capture_stdout=True, capture_stderr=True)
        assert r.stdout.decode() == "missed meanwhile\nthird\n", r.stderr.decode()
        r = await trio.run_process([*argv, "--resume", "-m", "fourth"], capture_stdout=True)
        assert r.stdout.decode() == "fourth\n"
    assert (gateway.runtime.paths.data_dir / "chat-state.json").exists()


async def test_chat_explains_a_wrong_url_or_a_stopped_gateway(gateway: RunningGateway) -> None:
    from tests.gateway.harness import free_port

    wrong_path = chat_argv(gateway, "-m", "hi")
    wrong_path[wrong_path.index("--url") + 1] = gateway.ws_url + "/not-ws"
    nobody = chat_argv(gateway, "-m", "hi")
    nobody[nobody.index("--url") + 1] = f"ws://127.0.0.1:{free_port()}/ws"
    bad_token = chat_argv(gateway, "-m", "hi")
    bad_token[bad_token.index("--token") + 1] = "not-the-token-0123456789"
    with trio.fail_after(30):
        for argv, expected in (
            (wrong_path, "is not a gateway's /ws (HTTP 403)"),
            (nobody, "is the gateway running?"),
            (bad_token, "refused the token (auth_failed: not the gateway token"),
        ):
            r = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
            err = r.stderr.decode()
            assert r.returncode == 1 and expected in err and "Traceback" not in err, err


async def test_chat_ends_when_the_gateway_goes_away(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A stopping gateway closes /ws (1001): the chat says so and exits, waiting neither for stdin nor the turn."""
    config, paths = make_config(tmp_path, providers={"echo": {"delay_ms": 20}})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        interactive = await trio.lowlevel.open_process(
            chat_argv(gw), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        one_shot = await trio.lowlevel.open_process(
            chat_argv(gw, "--channel", "2", "-m", " ".join(["long"] * 1000)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert interactive.stdin and interactive.stdout and interactive.stderr
            assert one_shot.stdout and one_shot.stderr
            await interactive.stdin.send_all(b"hello\n")
            assert (await interactive.stdout.receive_some(100)).startswith(b"hello")
            assert (await one_shot.stdout.receive_some(100)).startswith(b"long")  # its turn is streaming
            await gw.stop()  # stdin stays open; the one-shot turn is not over
            for proc, stderr in ((interactive, interactive.stderr), (one_shot, one_shot.stderr)):
                assert await proc.wait() == 1
                err = b""
                while chunk := await stderr.receive_some(4096):
                    err += chunk
                assert b"the gateway closed the connection (code 1001" in err and b"Traceback" not in err, err
            await interactive.stdin.aclose()
        finally:
            for proc in (interactive, one_shot):  # a failed test must not leave them running
                if proc.returncode is None:
                    proc.kill()


async def test_chat_takes_the_url_the_banner_prints(gateway: RunningGateway) -> None:
    """`gateway serve` prints `http://host:port/`; that, a ws:// URL without `/ws` and a bare host:port all work."""
    port = gateway.base_url.rsplit(":", 1)[1]
    with trio.fail_after(60):
        for given in (gateway.base_url + "/", f"ws://127.0.0.1:{port}", f"127.0.0.1:{port}"):
            argv = chat_argv(gateway, "-m", "hello")
            argv[argv.index("--url") + 1] = given
            r = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
            assert r.returncode == 0 and r.stdout.decode() == "hello\n", (given, r.stderr.decode())
        for bad in ("ftp://127.0.0.1/", "http://127.0.0.1:notaport/"):
            argv = chat_argv(gateway, "-m", "hello")
            argv[argv.index("--url") + 1] = bad
            r = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
            err = r.stderr.decode()
            assert r.returncode == 2 and "--url" in err and "Traceback" not in err, err


def test_chat_without_url_dials_the_running_gateway_from_its_lock(tmp_path: Path) -> None:
    from tests.gateway.harness import Site

    site = Site(tmp_path)  # port 0 in the config: the gateway listens wherever the system puts it, not 8741
    try:
        site.spawn("serve")
        info = site.wait_serving()
        r = site.cli("chat", "-m", "found you")
        assert r.returncode == 0 and r.stdout == "found you\n", r.stderr
        interactive = subprocess.run(
            site.argv("chat", "--channel", "3"),
            env=site.env,
            input="hi there\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert interactive.returncode == 0, interactive.stderr
        assert interactive.stdout == "hi there\n"
        banner, _, rest = interactive.stderr.partition("> ")
        assert f"connected to ws://127.0.0.1:{info.port}/ws (v1), chat 1, channel 3" in banner
        assert "session " in banner and "provider echo (model echo)" in banner
        assert "Ctrl-C aborts the running turn" in banner and "Ctrl-D" in banner
        assert rest.count("> ") == 1, "a prompt before each message: one sent, then end of input"
        assert site.cli("stop").returncode == 0
    finally:
        site.cleanup()
