"""docs/cli.md and docs/config.md cannot drift: every command, option and setting is in them (cli.md as rendered)."""

from __future__ import annotations

import argparse
import sys

import msgspec
import pytest

from gateway import clidoc
from gateway.cli import build_parser
from gateway.config import Config


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


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
