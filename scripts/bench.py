"""The benchmark driver: runs each scripts/bench_<name>.py, prints ratios, and updates docs/performance.md."""

from __future__ import annotations

import argparse
import importlib
import inspect
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


ORDER = ["storage", "ingress", "ws", "peer", "memory", "startup"]  # the table's order; others follow by name


def available() -> list[str]:
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.1f}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def table(rows: list[dict[str, Any]]) -> str:
    """One Markdown table: value, the floor measured in the same run, their ratio, the target and whether met."""
    lines = [
        "| benchmark | value | floor (same run) | ratio | target | met | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        floor = "—" if r.get("floor") is None else f"{_fmt(r['floor'])} {r['unit']} ({r.get('floor_name', '')})"
        ratio = "—" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        met = {True: "✅", False: "❌", None: ""}[r.get("met")]
        lines.append(
            f"| {r['name']} | {_fmt(r['value'])} {r['unit']} | {floor} | {ratio} | {r.get('target') or '—'} "
            f"| {met} | {r.get('note', '')} |"
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
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="memory: run the 'memory comes back' gateway under tracemalloc and print the top growth between "
        "rounds (its RSS figures are then inflated by the tracing)",
    )
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
    every: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        module = importlib.import_module(f"bench_{name}")
        try:
            options = (
                {"tracemalloc": True}
                if args.tracemalloc and "tracemalloc" in inspect.signature(module.run).parameters
                else {}
            )
            rows: list[dict[str, Any]] = module.run(quick=args.quick, **options)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name}: FAILED: {exc!r}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        every.extend(rows)
        if not args.no_write:
            write_section(name, f"Measured on {machine} in {time.perf_counter() - t0:.0f} s.\n\n{table(rows)}")
    body = f"Measured on {machine} in {time.perf_counter() - started:.0f} s.\n\n{table(every)}"
    print(f"\n{body}")
    if not args.no_write and not args.names and not failed:
        write_section("summary", body)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
