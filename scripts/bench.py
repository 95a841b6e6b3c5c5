"""The benchmark driver: runs each scripts/bench_<name>.py, prints ratios, and updates docs/performance.md."""

from __future__ import annotations

import argparse
import importlib
import platform
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "performance.md"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | value | floor (same run) | ratio | target | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        target = r.get("target")
        ok = "" if target is None or r.get("ratio") is None else (" ✅" if r["ratio"] >= target else " ❌")
        floor = f"{r['floor']} {r['unit']} ({r.get('floor_name', '')})" if r.get("floor") is not None else "—"
        ratio = "—" if r.get("ratio") is None else f"{r['ratio']}{ok}"
        target_s = "—" if target is None else f"≥ {target}" if r.get("higher_is_better", True) else f"≤ {target}"
        lines.append(
            f"| {r['name']} | {r['value']} {r['unit']} | {floor} | {ratio} | {target_s} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + f"\n\n## `{name}`\n\n{block}\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(available())})")
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in under a minute")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(available())}")
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d', time.gmtime())}"
        + (", --quick" if args.quick else "")
    )
    failed = 0
    for name in names:
        t0 = time.perf_counter()
        module = importlib.import_module(f"bench_{name}")
        try:
            rows: list[dict[str, Any]] = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name}: FAILED: {exc!r}", file=sys.stderr)
            failed += 1
            continue
        body = f"Measured on {machine} in {time.perf_counter() - t0:.0f} s.\n\n{table(rows)}"
        print(f"\n## {name}\n{body}")
        if not args.no_write:
            write_section(name, body)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
