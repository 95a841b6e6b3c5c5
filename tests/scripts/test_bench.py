"""The benchmark driver runs (quick mode) and reports ratios; it asserts nothing about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_storage_quick_runs_and_reports_a_ratio() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--no-write", "storage"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "storage actor, 100-row writes" in r.stdout
    assert "raw sqlite3" in r.stdout


def test_bench_rejects_an_unknown_name() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--no-write", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "unknown benchmark" in r.stderr
