"""scripts/_venv.sh, as scripts/serve and scripts/gateway run it: a first run says what it does before doing it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_first_run_says_it_is_installing_before_it_starts(tmp_path: Path) -> None:
    # The first scripts/serve installed for ~30 s in silence (issue 15 item 19). A Python that cannot make a
    # virtual environment stops the script at its first slow step: what it printed before that is the point.
    venv = tmp_path / "venv"
    env = {**os.environ, "GATEWAY_VENV": str(venv), "PYTHON": "false"}
    r = subprocess.run(
        [ROOT / "scripts" / "serve", "--help"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("installing dependencies into ") and "first run only" in lines[0], r.stderr
    assert "cannot make a virtual environment" in lines[-1], r.stderr
