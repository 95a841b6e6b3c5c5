"""A short `gateway …` command loads neither the event loop's library nor the HTTP stack until it needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("trio", "httpx", "hypercorn", "starlette", "nacl")


def loaded(code: str, *args: str) -> list[str]:
    """What `code`, run in a fresh interpreter, prints: the names of the modules it found loaded."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_the_cli_and_the_config_load_no_heavy_library(tmp_path: Path) -> None:
    # What every command does before its own work: import the CLI, load and validate the config (trusted proxies
    # included, which parse addresses). trio alone was 0.1-0.3 s of each command's start.
    config = tmp_path / "config.toml"
    config.write_text('[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    code = (
        "import sys\n"
        "from gateway.daemon import cli\n"
        "from gateway.config.file import load_config\n"
        "from pathlib import Path\n"
        "load_config(Path(sys.argv[1]))\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    assert loaded(code, str(config)) == []


def test_a_command_builds_only_its_own_parser_and_its_help_is_whole() -> None:
    # A run builds the parser of the command it was given: the four commands whose modules describe their own
    # arguments (user, dashboard, onboard, completion) are not imported by another command's run.
    code = (
        "import sys\n"
        "from gateway.daemon import cli\n"
        "full = cli.build_parser()\n"
        "mods = ('gateway.daemon.useradmin', 'gateway.daemon.dashboard', 'gateway.daemon.onboard',"
        " 'gateway.daemon.completion')\n"
        "for m in mods: sys.modules.pop(m, None)\n"
        "one = cli.build_parser(only='status')\n"
        "print(' '.join(m for m in mods if m in sys.modules))\n"
    )
    assert loaded(code) == []
    # Each command's --help is the same whether the run built all parsers or only its own.
    from gateway.daemon.cli import build_parser, commands

    full = commands(build_parser())
    assert len(full) >= 20
    for name, sub in full.items():
        mine = commands(build_parser(only=name))
        assert name in mine
        assert mine[name].format_help() == sub.format_help(), name
    assert "nonsense" not in commands(build_parser(only="nonsense"))


def test_a_word_that_is_no_command_gets_argparse_error_listing_every_command() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "nonsense"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.returncode == 2
    assert "invalid choice: 'nonsense'" in r.stderr
    for name in ("serve", "status", "user", "dashboard", "onboard", "completion"):
        assert f"'{name}'" in r.stderr, r.stderr


def test_status_stop_and_restart_load_no_server_stack() -> None:
    # `gateway status`, `stop`, `restart` and the service install need the run loop's exit codes and command line
    # (gateway.daemon.launch), not the serve loop, which loads trio and the runtime (~0.15 s of each command).
    code = (
        "import sys\n"
        "from gateway.daemon import control, os_service\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('trio', 'hypercorn', 'starlette', 'actors')"
        " or m == 'gateway.daemon.serve'))\n"
    )
    assert loaded(code) == []
