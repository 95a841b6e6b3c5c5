"""The benchmark driver runs (quick mode) and reports ratios; it asserts nothing about speed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Each row's name (its start) and how many rows start with it.
ROWS = {
    "storage actor, 100-row writes from 8 tasks": 1,
    "storage actor, 1-row writes from 32 tasks": 1,
    "batch ingress, 100 events/request": 1,
    "batch ingress vs raw SQLite alone": 1,
    "batch ingress vs an HTTP server that stores nothing": 1,
    "single-event ingress /events, 32 clients": 1,
    "encrypted /ws text_deltas/s": 1,
    "time to first text_delta p50": 1,
    "time to first text_delta p99": 1,
    "abort → abort_ok with the process group gone, p50": 1,
    "abort → abort_ok with the process group gone, p99": 1,
    "peer: 3000-word reply, gateway vs ductor 0.20.1 ApiServer": 1,
    "peer: first text_delta p50, gateway vs ductor": 1,
    "peer: first text_delta p99, gateway vs ductor": 1,
    "idle RSS": 1,
    "restarted gateway idle RSS (no migration pending)": 1,
    "RSS per idle /ws connection with its session, ": 2,
    "memory comes back: RSS after round ": 1,
    "RSS growth per 10k hibernated sessions": 1,
    "startup of the zipapp to the first 200 on /health": 1,
}


@pytest.mark.slow
@pytest.mark.longest
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
    for name, count in ROWS.items():
        lines = [line for line in table if line.startswith(f"| {name}")]
        assert len(lines) == count, f"not {count} row(s) {name!r} in:\n{r.stdout}"
        for line in lines:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[1] and cells[1] != "—", line
    floored = [line for line in table if "(same run)" not in line and "---" not in line]
    assert sum("—" not in line.split("|")[3] for line in floored) >= 16, r.stdout


def test_bench_rejects_an_unknown_name() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--no-write", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "unknown benchmark" in r.stderr


@pytest.mark.slow
def test_memory_bench_prints_tracemalloc_growth_between_rounds(tmp_path: Path) -> None:
    # `scripts/bench --tracemalloc memory`: the "memory comes back" gateway runs under tracemalloc and the top
    # growth between rounds is printed as file:line, to say what to fix. Three tiny rounds through the same code.
    code = (
        "import pathlib, sys\n"
        "sys.path[:0] = sys.argv[1:3]\n"
        "import bench_memory\n"
        "series, stuck = bench_memory._comes_back(pathlib.Path(sys.argv[3]), 3, 5, True, 0.1)\n"
        "print(len(series), stuck)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "scripts"), str(ROOT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.split()[0] == "3", r.stdout
    for title in ("round 1 -> round 2", "round 2 -> round 3", "round 1 -> round 3"):
        assert f"tracemalloc, top growth {title}:" in r.stderr, r.stderr[-4000:]
    grown = re.findall(r"^ +[+-] *\d+\.\d KiB +[+-]?\d+ blocks +(\S+):(\d+)$", r.stderr, re.MULTILINE)
    assert len(grown) >= 3 * 5, r.stderr[-4000:]
    assert "allocated from:" in r.stderr
