"""The single-file build: scripts/build-zipapp makes a zipapp without pip that serves /health and runs the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import trio

from tests.fakes.http_server import serve_app
from tests.gateway.harness import CLI_TIMEOUT, Site, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
CALC_SERVER = ROOT / "tests" / "fakes" / "mcp_calc_server.py"
pytestmark = pytest.mark.slow
# Left out of the zipapp on purpose (scripts/build-zipapp): pip, the build backend, the MCP SDK's server runner;
# and sqlite-utils, which the migrations no longer use (plain SQL): a dev dependency only.
LEFT_OUT = ("pip", "setuptools", "uvicorn", "sqlite_utils")
SIZE_TOLERANCE = 0.05  # the figures in docs/install.md, as a share of the measured size


def documented_size(platform: str) -> float:
    """The zipapp size docs/install.md gives for `host` or `aarch64`, in MiB."""
    text = (ROOT / "docs" / "install.md").read_text()
    match = re.search(r"^\| `dist/gateway.pyz` \(host\) / aarch64 \| ([\d.]+) MiB / ([\d.]+) MiB \|", text, re.M)
    assert match, "docs/install.md lost its size row"
    return float(match[1] if platform == "host" else match[2])


def check_documented_size(pyz: Path, platform: str) -> None:
    measured = pyz.stat().st_size / 2**20
    documented = documented_size(platform)
    assert abs(measured - documented) <= SIZE_TOLERANCE * measured, (
        f"the {platform} zipapp is {measured:.1f} MiB; docs/install.md says {documented} MiB: update it"
    )


def payload(pyz: Path) -> zipfile.ZipFile:
    """shiv's archive inside the zipapp, which holds nothing else but the `__main__.py` that starts it (a start reads
    a table of contents of two entries, not of thousands)."""
    outer = zipfile.ZipFile(pyz)
    assert outer.namelist() == ["__main__.py", "payload.pyz"], outer.namelist()
    assert outer.getinfo("payload.pyz").compress_type == zipfile.ZIP_STORED  # its entries are compressed already
    return zipfile.ZipFile(outer.open("payload.pyz"))


def check_contents(names: list[str], arch: str) -> None:
    """Nothing left out crept in, and every compiled extension lost its symbol table."""
    for name in LEFT_OUT:
        assert not [n for n in names if n.startswith((f"site-packages/{name}/", f"site-packages/{name}-"))], name
    extensions = [n for n in names if n.endswith(".so")]
    assert extensions, "cffi, cbor2, msgspec and nacl ship compiled extensions"
    assert all(arch in n or n.endswith(".abi3.so") for n in extensions), extensions


@pytest.fixture(scope="module")
def built() -> tuple[Path, Path]:
    """(the zipapp, where the benchmarks extract it). scripts/build-zipapp's own output, dist/gateway.pyz, as
    scripts/benchlib.py keeps it: built unless it was built from exactly these sources (the gateway's, the build
    script's, the run lock), one build at a time. The benchmark smoke test (tests/scripts/test_bench.py) measures
    the same file, so the suite builds it once."""
    started = time.monotonic()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import benchlib\n"
        "print(benchlib.ensure_zipapp()); print(benchlib.SHIV_ROOT)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    out, root = (Path(line) for line in r.stdout.split())
    print(f"{out} ready in {time.monotonic() - started:.1f} s: {out.stat().st_size / 2**20:.1f} MiB")
    return out, root


@pytest.fixture(scope="module")
def pyz(built: tuple[Path, Path]) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def shiv_root(built: tuple[Path, Path]) -> Path:
    """The benchmarks' extraction folder, for the tests that need the zipapp extracted rather than a cold start: a
    first start extracts ~2,400 files and compiles every module (~4 s of CPU), so every worker and the benchmark
    smoke test share one (shiv's file lock orders the first). The serve test starts its own cold, then warm."""
    return built[1]


def test_the_zipapp_holds_no_pip_and_imports_none(pyz: Path, shiv_root: Path) -> None:
    archive = payload(pyz)
    names = archive.namelist()
    assert any(n.startswith("site-packages/gateway/") for n in names)
    check_contents(names, "x86_64" if os.uname().machine == "x86_64" else os.uname().machine)
    sodium = next(n for n in names if n.startswith("site-packages/nacl/_sodium"))
    assert b".symtab\0" not in archive.read(sodium), "scripts/build-zipapp strips the extensions"
    check_documented_size(pyz, "host")
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env -S python3 -S\n")
    probe = (
        "import importlib.util, sys\n"
        "import gateway.daemon.cli, gateway.runtime, gateway.http.asgi, gateway.daemon.serve, gateway.daemon.control\n"
        "import gateway.daemon.os_service\n"
        "import storage.db, storage.schema\n"
        "print('pip' in sys.modules, importlib.util.find_spec('pip'), sys.flags.no_site)\n"
        # Cron jobs' timezones come from the bundled tzdata when the OS has no tz database (no TZPATH here).
        "from actors.scheduler import check_timezone; import zoneinfo\n"
        "print(len(zoneinfo.TZPATH), check_timezone('America/New_York').key)\n"
    )
    env = {**os.environ, "SHIV_ROOT": str(shiv_root), "SHIV_INTERPRETER": "1", "PYTHONTZPATH": ""}
    r = subprocess.run(
        [sys.executable, "-S", str(pyz), "-c", probe], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "None", "1", "0", "America/New_York"]


async def test_the_zipapp_calls_mcp_tools_over_stdio_sse_and_streamable_http(
    pyz: Path, shiv_root: Path, nursery: trio.Nursery
) -> None:
    # The gateway's MCP client path (actors.mcp, the SDK's three client transports) runs from the zipapp, which
    # lacks the SDK's server runner: each transport lists the fake calc server's tools and calls one. The servers
    # run in this test's environment, which has the whole SDK.
    from tests.fakes.mcp_calc_server import app

    http = await serve_app(nursery, app.streamable_http_app())
    sse = await serve_app(nursery, app.sse_app())
    probe = f"""
import json, sys, trio
from actors.mcp import McpHub
from gateway.outbound import OutboundPolicy
from storage.mcp import McpServerRow

ROWS = [
    McpServerRow(
        name="stdio", transport="stdio", enabled=True, command={sys.executable!r}, args=[{str(CALC_SERVER)!r}]
    ),
    McpServerRow(name="http", transport="streamable_http", enabled=True, url={http + "/mcp"!r}, url_by_owner=True),
    McpServerRow(name="sse", transport="sse", enabled=True, url={sse + "/sse"!r}, url_by_owner=True),
]

async def main():
    results = {{}}
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(McpHub(http_client=OutboundPolicy().client2).run)
        hub.apply(ROWS)
        with trio.fail_after(60):
            for row in ROWS:
                st = await hub.wait_state(row.name, "connected", "error", "failed")
                ok = st.state == "connected"
                results[row.name] = await hub.call(row.name, "add", {{"a": 2, "b": 3}}) if ok else st.last_error
        nursery.cancel_scope.cancel()
    left_out = [m for m in {list(LEFT_OUT)!r} if m in sys.modules]
    print(json.dumps({{"results": results, "loaded": left_out}}))

trio.run(main)
"""
    env = {**os.environ, "SHIV_ROOT": str(shiv_root), "SHIV_INTERPRETER": "1"}
    with trio.fail_after(CLI_TIMEOUT * 2):
        command = [sys.executable, "-S", str(pyz), "-c", probe]
        r = await trio.run_process(command, env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert out == {"results": {"stdio": "5", "http": "5", "sse": "5"}, "loaded": []}, out


def test_a_first_start_extracts_and_keeps_nothing_of_the_payload(pyz: Path, tmp_path: Path) -> None:
    # The cold path of scripts/zipapp_main.py, run in a process of its own: shiv's code extracts the packages from
    # a copy of the payload; afterwards no copy is left and zipimport keeps no table of its ~2,400 entries.
    probe = (
        "import runpy, sys, zipimport\n"
        "sys.argv = [sys.argv[1], '--version']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print(sorted(zipimport._zip_directory_cache), [k for k in sys.path_importer_cache if 'payload' in k])\n"
    )
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv")}
    r = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(pyz)], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    assert r.returncode == 0, r.stderr
    version, caches = r.stdout.splitlines()
    assert version.startswith("gateway ")
    assert caches == f"[{str(pyz)!r}] []", caches
    left = sorted(p.name for p in (tmp_path / "shiv").iterdir() if not p.name.startswith("."))
    assert len(left) == 1 and left[0].startswith(f"{pyz.name}_") and not left[0].endswith(".tmp"), left


def test_the_zipapp_serves_health_and_runs_start_status_stop(pyz: Path, tmp_path: Path) -> None:
    port = free_port()
    # Run the file itself, as a user would: its shebang picks python3 with -S.
    site = Site(tmp_path, command=[str(pyz)], port=port, SHIV_ROOT=str(tmp_path / "shiv"))
    try:
        timings = []
        for _ in range(2):  # the first run extracts to SHIV_ROOT, the second is warm
            started = time.monotonic()
            proc = site.spawn("start")

            def healthy() -> bool | None:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200 or None
                except httpx.HTTPError:
                    return None

            wait_for(healthy, timeout=CLI_TIMEOUT, what="the zipapp's /health")
            timings.append(time.monotonic() - started)
            info = site.wait_serving()
            assert info.pid == proc.pid
            assert info.argv[1:3] == ["-S", str(pyz)], "a respawn must run the same zipapp, isolated"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=CLI_TIMEOUT) == 0, site.output()
        print(f"start to first /health 200: cold {timings[0]:.2f} s, warm {timings[1]:.2f} s")
        # The first start extracted the packages once and deleted its copy of the payload.
        extracted = sorted(p.name for p in (tmp_path / "shiv").iterdir() if not p.name.startswith("."))
        assert len(extracted) == 1 and extracted[0].startswith(f"{pyz.name}_"), extracted

        proc = site.spawn("start")
        site.wait_serving()
        status = site.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["running"] and data["pid"] == proc.pid and data["port"] == port and data["healthy"]
        assert site.cli("serve").returncode == 1  # the lock works from the zipapp too
        # The web UI ships inside the file: its page and the vendored NaCl come out of the package data.
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        nacl = httpx.get(f"http://127.0.0.1:{port}/assets/vendor/nacl-fast.min.js", timeout=5)
        assert page.status_code == 200 and "/assets/js/app.js" in page.text
        assert nacl.status_code == 200 and nacl.headers["content-type"].startswith("text/javascript")
        stop = site.cli("stop")
        assert stop.returncode == 0 and f"gateway stopped (pid {proc.pid})" in stop.stdout
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
        assert site.cli("status").returncode == 3
    finally:
        site.cleanup()


def test_a_sigusr1_restart_respawns_the_same_zipapp(pyz: Path, shiv_root: Path, tmp_path: Path) -> None:
    site = Site(
        tmp_path,
        command=[str(pyz)],
        port=free_port(),
        SHIV_ROOT=str(shiv_root),
        GATEWAY_ALLOW_SIGUSR1_RESTART="1",
    )
    site.env.pop("GATEWAY_NO_RESPAWN")
    try:
        proc = site.spawn("serve")
        before = site.wait_serving()
        restart = site.cli("restart")
        assert restart.returncode == 0, restart.stdout + restart.stderr
        after = site.wait_serving()
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
        assert after.pid != before.pid and after.port == before.port
        cmdline = Path(f"/proc/{after.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-S", str(pyz).encode()], cmdline
        assert site.cli("stop").returncode == 0
    finally:
        site.cleanup()


def test_the_zipapp_installs_a_unit_that_runs_itself(pyz: Path, shiv_root: Path, tmp_path: Path) -> None:
    site = Site(tmp_path, command=[str(pyz)], SHIV_ROOT=str(shiv_root))
    r = site.cli("install", "--print", "--platform", "linux")
    assert r.returncode == 0, r.stderr
    assert f" -S {pyz} serve --config {site.paths.config_file}" in r.stdout
    assert f"Environment=SHIV_ROOT={shiv_root}" in r.stdout


@pytest.mark.longest
def test_the_aarch64_build_holds_only_aarch64_extensions_and_no_pip(tmp_path: Path) -> None:
    out = tmp_path / "gateway-aarch64.pyz"
    r = subprocess.run(
        [str(ROOT / "scripts" / "build-zipapp"), "--platform", "aarch64", "-o", str(out), "--build-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    names = payload(out).namelist()
    check_contents(names, "aarch64")
    assert not [n for n in names if "x86_64" in n]
    wheels = [p.name for p in (tmp_path / "wheels").iterdir()]
    assert all("x86_64" not in w for w in wheels), wheels
    # Every runtime version of requirements/run.lock has an aarch64 wheel: the build downloaded binaries only.
    assert "from requirements/run.lock" in r.stdout and ", stripped)" in r.stdout, r.stdout
    check_documented_size(out, "aarch64")
