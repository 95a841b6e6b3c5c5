"""The single-file build: scripts/build-zipapp makes a zipapp without pip that serves /health and runs the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.gateway.harness import CLI_TIMEOUT, Site, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapp") / "gateway.pyz"
    started = time.monotonic()
    r = subprocess.run(
        [str(ROOT / "scripts" / "build-zipapp"), "-o", str(out), "--build-dir", str(out.parent / "build")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"built {out} in {time.monotonic() - started:.1f} s: {out.stat().st_size / 2**20:.1f} MiB")
    return out


def test_the_zipapp_holds_no_pip_and_imports_none(pyz: Path, tmp_path: Path) -> None:
    names = zipfile.ZipFile(pyz).namelist()
    assert any(n.startswith("site-packages/gateway/") for n in names)
    assert not [n for n in names if n.startswith(("site-packages/pip/", "site-packages/pip-"))]
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env -S python3 -S\n")
    probe = (
        "import importlib.util, sys\n"
        "import gateway.daemon.cli, gateway.runtime, gateway.http.asgi, gateway.daemon.serve, gateway.daemon.control\n"
        "import gateway.daemon.os_service\n"
        "import storage.db, sqlite_utils\n"
        "print('pip' in sys.modules, importlib.util.find_spec('pip'), sys.flags.no_site)\n"
    )
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv"), "SHIV_INTERPRETER": "1"}
    r = subprocess.run(
        [sys.executable, "-S", str(pyz), "-c", probe], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "None", "1"]


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


def test_a_sigusr1_restart_respawns_the_same_zipapp(pyz: Path, tmp_path: Path) -> None:
    site = Site(
        tmp_path,
        command=[str(pyz)],
        port=free_port(),
        SHIV_ROOT=str(tmp_path / "shiv"),
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


def test_the_zipapp_installs_a_unit_that_runs_itself(pyz: Path, tmp_path: Path) -> None:
    site = Site(tmp_path, command=[str(pyz)], SHIV_ROOT=str(tmp_path / "shiv"))
    r = site.cli("install", "--print", "--platform", "linux")
    assert r.returncode == 0, r.stderr
    assert f" -S {pyz} serve --config {site.paths.config_file}" in r.stdout
    assert f"Environment=SHIV_ROOT={tmp_path / 'shiv'}" in r.stdout


def test_the_aarch64_build_holds_only_aarch64_extensions_and_no_pip(tmp_path: Path) -> None:
    out = tmp_path / "gateway-aarch64.pyz"
    r = subprocess.run(
        [str(ROOT / "scripts" / "build-zipapp"), "--platform", "aarch64", "-o", str(out), "--build-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    names = zipfile.ZipFile(out).namelist()
    extensions = [n for n in names if n.endswith(".so")]
    assert extensions, "cffi, cbor2, msgspec and nacl ship compiled extensions"
    assert all("aarch64" in n or n.endswith(".abi3.so") for n in extensions), extensions
    assert not [n for n in names if "x86_64" in n]
    assert not [n for n in names if n.startswith(("site-packages/pip/", "site-packages/pip-"))]
    wheels = [p.name for p in (tmp_path / "wheels").iterdir()]
    assert all("x86_64" not in w for w in wheels), wheels
