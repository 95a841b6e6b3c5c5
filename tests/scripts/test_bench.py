"""The benchmark driver runs (quick mode) and reports ratios; it asserts nothing about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


ROWS = [
    "storage actor, 100-row writes from 8 tasks",
    "storage actor, 1-row writes from 32 tasks",
    "batch ingress, 100 events/request",
    "single-event ingress /events, 32 clients",
    "encrypted /ws text_delta frames/s",
    "time to first text_delta p50",
    "time to first text_delta p99",
    "abort → abort_ok with the process group gone, p50",
    "abort → abort_ok with the process group gone, p99",
    "idle RSS",
    "restarted gateway idle RSS (no migration pending)",
    "RSS per 1000 idle /ws connections with their sessions",
    "RSS growth per 10k hibernated sessions",
    "startup of the zipapp to the first 200 on /health",
]


@pytest.mark.slow
def test_bench_quick_runs_every_benchmark_and_prints_every_row() -> None:
    # The one CI smoke test of scripts/bench: it runs, and every row has a value and (where there is one) a floor.
    # No speed is asserted: targets are for scripts/bench to report, not for tests to enforce.
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--no-write"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    for name in ROWS:
        lines = [line for line in table if line.startswith(f"| {name}")]
        assert len(lines) == 1, f"no row {name!r} in:\n{r.stdout}"
        cells = [c.strip() for c in lines[0].strip("|").split("|")]
        assert cells[1] and cells[1] != "—", lines[0]
    floored = [line for line in table if "(same run)" not in line and "---" not in line]
    assert sum("—" not in line.split("|")[3] for line in floored) >= 10, r.stdout


def test_bench_rejects_an_unknown_name() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--no-write", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "unknown benchmark" in r.stderr
