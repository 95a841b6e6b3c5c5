"""What `gateway` commands print, as real processes: a closed pipe ends them quietly (`gateway status | head`), and
`status` names every row it shows."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import CLI_TIMEOUT, Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.cleanup()


def _into_a_closed_pipe(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout is a pipe nobody reads any more (what `| head` leaves once it has its lines)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            site.argv(*args) if args[0] != "--help" else [*site.command, *args],
            env=site.env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=CLI_TIMEOUT,
        )
    finally:
        os.close(write_end)


def _quiet(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 141, (r.returncode, r.stderr)  # 128 + SIGPIPE, as a shell reports `yes | head`
    for noise in ("Traceback", "BrokenPipe", "Broken pipe", "Exception ignored", "error"):
        assert noise not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("token",),
        ("config",),
        ("version",),
        ("install", "--print"),
        ("logs", "-n", "5"),
        ("--help",),
    ],
    ids=lambda a: " ".join(a),
)
def test_a_closed_pipe_ends_a_command_quietly(site: Site, args: tuple[str, ...]) -> None:
    site.paths.log_file.parent.mkdir(parents=True)
    site.paths.log_file.write_text("".join(f"line {i}\n" for i in range(100)))
    if args == ("--help",):
        r = _into_a_closed_pipe(site, *args)
        # argparse prints the help and exits 0 itself; what matters is that nothing is said about the pipe.
        assert r.returncode in (0, 141) and "Traceback" not in r.stderr and "Exception" not in r.stderr, r.stderr
        return
    _quiet(_into_a_closed_pipe(site, *args))


def test_status_of_a_running_gateway_explains_every_row_and_survives_head(site: Site) -> None:
    site.config_file.write_text(
        site.config_file.read_text() + "\n[connectors.http.hooks]\nallow_unauthenticated_ingress = true\n"
    )
    site.spawn("serve")
    site.wait_serving()
    status = site.cli("status")
    assert status.returncode == 0, status.stderr
    assert "_ingress" not in status.stdout and ": ?" not in status.stdout.replace(" ", ""), status.stdout
    ingress = next(line for line in status.stdout.splitlines() if line.strip().startswith("ingress:"))
    assert "events dispatched" in ingress and "turns run" in ingress and "dead letters" in ingress, ingress
    assert "http/hooks:" in status.stdout
    _quiet(_into_a_closed_pipe(site, "status"))
    _quiet(_into_a_closed_pipe(site, "chat", "-m", "into a closed pipe"))
    assert site.cli("stop").returncode == 0
