"""docs/cli.md and docs/config.md cannot drift: every command, option and setting is in them (cli.md as rendered)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import msgspec
import pytest

from gateway import __version__
from gateway.config.file import Config
from gateway.daemon import clidoc
from gateway.daemon.cli import build_parser, commands


def _commands() -> dict[str, argparse.ArgumentParser]:
    return commands(build_parser())


def test_every_command_and_option_is_documented() -> None:
    doc = clidoc.DOC.read_text()
    missing = []
    for name, parser in _commands().items():
        if f"gateway {name}" not in doc and f"{name})" not in doc:
            missing.append(name)
        for action in parser._actions:
            for option in action.option_strings:
                if option not in doc:
                    missing.append(f"{name} {option}")
    assert not missing, f"docs/cli.md lacks {missing}; run scripts/gen-cli-docs"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="argparse's layout differs between Python versions")
def test_docs_cli_md_is_the_rendered_help() -> None:
    assert clidoc.DOC.read_text() == clidoc.render(), "docs/cli.md is stale; run scripts/gen-cli-docs"


def test_every_command_answers_help() -> None:
    for name, parser in _commands().items():
        assert parser.format_help().startswith("usage: gateway "), name


def _settings(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    out: list[str] = []
    defaults = struct()
    for name in struct.__struct_fields__:
        value = getattr(defaults, name)
        out += _settings(type(value), f"{prefix}{name}.") if isinstance(value, msgspec.Struct) else [prefix + name]
    return out


def test_every_setting_is_in_docs_config_md() -> None:
    lines = (clidoc.DOC.parent / "config.md").read_text().splitlines()
    missing = []
    for setting in _settings(Config):
        section, _, key = setting.rpartition(".")
        # A row names it in full (`server.port`) or beside a sibling (`providers.cli.workdir`, `env`).
        if not any(f"`{setting}" in line or (f"`{section}." in line and f"`{key}`" in line) for line in lines):
            missing.append(setting)
    assert not missing, f"docs/config.md lacks {missing}"


ROOT = clidoc.DOC.parent.parent


def test_the_readme_opens_with_its_title_a_summary_and_a_two_command_quick_start() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0].startswith("# ") and lines[1] == "", "the title comes first"
    assert lines[2] and not lines[2].startswith(("#", " ", "-", "|", "`")) and lines[3] == "", "then a one-line summary"
    assert lines[4] == "## Quick start" and lines[5] == ""
    block = []
    for line in lines[6:]:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    commands = [line.split("#", 1)[0].strip() for line in block]
    assert commands == ["scripts/serve", "scripts/test"], block
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command
        assert "# " in (ROOT / command).read_text().splitlines()[1], f"{command} says what it does"


def test_the_readme_runs_the_cli_it_installs() -> None:
    """`gateway` is in .venv/bin, not on PATH: the README runs it as scripts/gateway, which works."""
    text = (ROOT / "README.md").read_text()
    assert "$(gateway " not in text and "scripts/gateway token" in text
    r = subprocess.run([ROOT / "scripts" / "gateway", "version"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == __version__, r.stderr
