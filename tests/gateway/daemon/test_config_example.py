"""`gateway config --example`: every setting of the Config tree, with its default and a comment, and the same set
of settings as docs/config.md; the example parses back to the defaults."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from gateway.config.file import Config, parse_config
from gateway.daemon.configexample import COMMENTS, settings
from tests.gateway.harness import Site

DOC = Path(__file__).resolve().parents[3] / "docs" / "config.md"


def _example(tmp_path: Path) -> str:
    site = Site(tmp_path)
    site.config_file.write_text("this is not TOML [")  # the example needs no working config
    r = site.cli("config", "--example")
    assert r.returncode == 0, r.stderr
    return r.stdout


def _defined(example: str) -> dict[str, str]:
    """Setting -> the comment line above it, for every `key = value` (or commented-out `# key = value`) line."""
    out: dict[str, str] = {}
    section = ""
    lines = example.splitlines()
    for i, line in enumerate(lines):
        if m := re.fullmatch(r"\[([a-z_.]+)\]", line):
            section = m[1]
        elif m := re.fullmatch(r"# \[([a-z_]+)\.[a-z_<>.]+\]", line):  # a commented table of tables: connectors
            out[m[1]] = lines[i - 1]
        elif (m := re.fullmatch(r"(?:# )?([a-z_]+) = .+", line)) and section:
            out[f"{section}.{m[1]}"] = lines[i - 1]
    return out


def _documented() -> set[str]:
    """The settings named by docs/config.md's table: `section.key`, or a bare `key` beside a sibling's full name."""
    names: set[str] = set()
    in_table = False
    for line in DOC.read_text().splitlines():
        if line.startswith("| setting |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if not in_table or line.startswith("| ---"):
            continue
        cell = line.split("|")[1]
        first, *rest = re.findall(r"`([^`]+)`", cell)
        if first.startswith("connectors."):
            names.add("connectors")
            continue
        section = first.rpartition(".")[0]
        names.add(first)
        names.update(name if "." in name else f"{section}.{name}" for name in rest)
    return names


def test_the_example_has_every_setting_with_a_comment_and_parses_back_to_the_defaults(tmp_path: Path) -> None:
    example = _example(tmp_path)
    assert parse_config(tomllib.loads(example)) == Config()
    defined = _defined(example)
    every = [name for name, _ in settings()]
    assert sorted(defined) == sorted(every)
    for name in every:
        assert defined[name].startswith("# ") and len(defined[name]) > 8, (name, defined[name])
    missing = sorted(set(every) - set(COMMENTS))
    stale = sorted(set(COMMENTS) - set(every))
    assert not missing and not stale, f"gateway/daemon/configexample.py COMMENTS: add {missing}, remove {stale}"


def test_the_example_and_docs_config_md_name_the_same_settings(tmp_path: Path) -> None:
    in_example = set(_defined(_example(tmp_path)))
    documented = _documented()
    assert sorted(documented - in_example) == [], "in docs/config.md, not in the example (nor the Config tree)"
    assert sorted(in_example - documented) == [], "in the example (the Config tree), not in docs/config.md"


def test_an_unset_setting_is_shown_commented_out_with_an_example_value(tmp_path: Path) -> None:
    example = _example(tmp_path)
    assert "# temperature = 0.7" in example and "\ntemperature" not in example
    assert "\n[providers.openai]\n" in example and '\napi_key = ""\n' in example
