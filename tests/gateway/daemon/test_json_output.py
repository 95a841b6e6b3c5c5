"""`--json` on the commands a script reads (status, token, user list, logs, doctor…): valid JSON from a real process."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.daemon.cli import build_parser
from gateway.daemon.completion import command_tree
from tests.gateway.harness import Site


def test_token_json_names_the_token_its_source_and_the_identity(tmp_path: Path) -> None:
    site = Site(tmp_path)
    first = site.cli("token", "--json")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["token"] == site.paths.token_file.read_text().strip()  # the one answer that is the secret itself
    assert data["generated"] is True and data["source"] == str(site.paths.token_file)
    assert data["identity"] is None or data["identity"].startswith("gw1:")
    again = json.loads(site.cli("token", "--json").stdout)
    assert again["generated"] is False and again["rotated"] is False and again["token"] == data["token"]
    rotated = site.cli("token", "--rotate", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["rotated"] is True and new["applied"] is True and new["token"] != data["token"]
    assert new["source"] == data["source"] and new["identity"] == data["identity"]
    assert new["token"] == site.paths.token_file.read_text().strip()


def test_status_json_of_a_stopped_gateway(tmp_path: Path) -> None:
    site = Site(tmp_path)
    token = site.cli("token").stdout.strip()
    r = site.cli("status", "--json")
    assert r.returncode == 3
    data = json.loads(r.stdout)
    assert data["running"] is False and data["configPath"] == str(site.config_file.resolve())
    assert token not in r.stdout and data["token"] == f"{token[:4]}…{token[-4:]}"


def test_every_json_flag_reads_alike() -> None:
    """One helper adds `--json` everywhere: the commands a script parses have it, worded for scripts."""
    tree = command_tree(build_parser())
    having = {n.path: o for n in tree.walk() for o in n.options if "--json" in o.flags}
    scripted = ("status", "token", "logs", "user list", "doctor", "backup", "restore", "dashboard")
    assert {f"gateway {name}" for name in scripted} <= set(having)
    assert all("JSON" in o.help and not o.takes_value for o in having.values())
