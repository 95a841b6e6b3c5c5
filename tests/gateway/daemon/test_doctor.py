"""`gateway doctor` through real processes: a healthy install, each broken condition, and beside a running gateway."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.harness import Site, free_port, wait_for

NAMES = ["config", "port", "data dir", "disk", "database", "provider", "connectors", "clock", "open files"]
API_KEY = "sk-doctor-test-key-0123456789"


class FakeOpenAI:
    """An OpenAI-style server on loopback: `GET /v1/models` answers 200 with the right key, else `status`."""

    def __init__(self) -> None:
        self.status = 200
        self.seen: list[str] = []
        self.clock_offset = 0.0  # seconds added to the Date header this server sends
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.seen.append(self.path)
                ok = self.path == "/v1/models" and self.headers.get("Authorization") == f"Bearer {API_KEY}"
                code = fake.status if ok else 401
                body = json.dumps({"object": "list", "data": [{"id": "m1", "object": "model"}]}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def date_time_string(self, timestamp: float | None = None) -> str:
                return formatdate(time.time() + fake.clock_offset, usegmt=True)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    try:
        yield fake
    finally:
        fake.close()


def _doctor(site: Site, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        site.argv("doctor", *args), env={**site.env, **env}, capture_output=True, text=True, timeout=60
    )


def _checks(site: Site, **env: str) -> tuple[int, dict[str, dict[str, str]], list[str]]:
    r = _doctor(site, "--json", **env)
    data = json.loads(r.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert data["ok"] is (r.returncode == 0)
    return r.returncode, checks, [c["name"] for c in data["checks"]]


def _make_db(site: Site) -> None:
    r = subprocess.run(site.argv("user", "add", "root", "--password-stdin"), env=site.env,
                       input="a long password\n", capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr


def _corrupt(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        root, size = conn.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master WHERE name = 'users'"
        ).fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with db.open("r+b") as fh:
        fh.seek((root - 1) * size)
        fh.write(b"\x0d\x00\x00\x00\x09\x00\x00\x00")


def test_doctor_finds_each_broken_condition(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    site = Site(
        tmp_path,
        GATEWAY_AGENT_PROVIDER="openai",
        GATEWAY_PROVIDERS_OPENAI_BASE_URL=fake_openai.url,
        GATEWAY_PROVIDERS_OPENAI_API_KEY=API_KEY,
    )
    # Before the first start: nothing exists yet, which is a warning, not a failure.
    code, checks, names = _checks(site)
    assert code == 0 and names == NAMES
    assert checks["data dir"]["status"] == "warn" and checks["database"]["status"] == "warn"

    _make_db(site)
    code, checks, names = _checks(site)
    assert code == 0 and names == NAMES, checks
    assert {c["status"] for c in checks.values()} <= {"ok", "warn"}
    assert checks["config"]["status"] == "ok" and str(site.config_file) in checks["config"]["detail"]
    assert checks["data dir"]["status"] == "ok" and "gateway.db 0600" in checks["data dir"]["detail"]
    assert checks["database"]["status"] == "ok" and "quick_check" in checks["database"]["detail"]
    assert checks["provider"] == {**checks["provider"], "status": "ok"} and "HTTP 200" in checks["provider"]["detail"]
    assert fake_openai.seen[-1] == "/v1/models"
    assert checks["clock"]["status"] == "ok" and "agrees with the provider" in checks["clock"]["detail"]
    assert checks["connectors"]["detail"] == "none configured"
    assert API_KEY not in json.dumps(checks)

    # The human form: one line per check, its status first, no fix shown for what is fine.
    r = _doctor(site)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == len(NAMES)
    assert all(line.split()[0] in ("OK", "WARN") for line in lines) and "fix:" not in r.stdout

    data = site.paths.data_dir
    data.chmod(0o755)
    try:
        code, checks, _ = _checks(site)
        assert code == 1 and checks["data dir"]["status"] == "fail"
        assert "0755" in checks["data dir"]["detail"] and checks["data dir"]["fix"] == f"chmod 700 {data}"
        r = _doctor(site)
        assert r.returncode == 1 and any(line.startswith("FAIL  data dir") and "fix: chmod 700" in line
                                         for line in r.stdout.splitlines())  # fmt: skip
    finally:
        data.chmod(0o700)
    db = site.paths.db_file
    db.chmod(0o644)
    code, checks, _ = _checks(site)
    assert code == 1 and "gateway.db 0644" in checks["data dir"]["detail"]
    db.chmod(0o600)

    fake_openai.status = 401
    code, checks, _ = _checks(site)
    assert code == 1 and checks["provider"]["status"] == "fail"
    assert "refuses the API key" in checks["provider"]["detail"]
    fake_openai.status = 200
    code, checks, _ = _checks(site, GATEWAY_PROVIDERS_OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    assert code == 1 and "unreachable" in checks["provider"]["detail"]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, checks, _ = _checks(site, GATEWAY_SERVER_PORT=str(port))
        assert code == 1 and checks["port"]["status"] == "fail"
        assert f"127.0.0.1:{port} is in use" in checks["port"]["detail"]

    code, checks, _ = _checks(site, GATEWAY_SERVER_PORT="not a port")
    assert code == 1 and checks["config"]["status"] == "fail" and list(checks) == ["config", "clock", "open files"]

    _corrupt(site.paths.db_file)
    code, checks, _ = _checks(site)
    assert code == 1 and checks["database"]["status"] == "fail" and "restore" in checks["database"]["fix"]
    assert [n for n, c in checks.items() if c["status"] == "fail"] == ["database"]


def test_doctor_beside_a_running_gateway(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    port = free_port()
    site = Site(tmp_path, port=port)
    site.config_file.write_text(
        site.config_file.read_text() + "\n[connectors.http.hooks]\nallow_unauthenticated_ingress = true\n"
    )
    try:
        site.spawn("serve")
        info = site.wait_serving()
        code, checks, names = _checks(site)
        assert code == 0, checks
        assert names == [*NAMES[:6], "connector http/hooks", *NAMES[7:]]
        assert checks["port"]["status"] == "ok" and f"pid {info.pid}" in checks["port"]["detail"]
        hooks = checks["connector http/hooks"]
        assert hooks["status"] == "ok" and hooks["detail"].startswith("running")
        assert checks["database"]["status"] == "ok" and checks["provider"]["detail"].startswith("echo")
        wal = site.paths.db_file.with_name("gateway.db-wal")
        assert wal.exists() and "gateway.db-wal" in checks["data dir"]["detail"]

        # The provider set over the API (stored in the database, its key sealed) is the one checked.
        token = site.paths.token_file.read_text().strip()
        body = {"provider": "openai", "base_url": fake_openai.url, "model_name": "m1", "api_key": API_KEY}
        assert info.url is not None
        r = httpx.post(f"{info.url}/api/app-config/llm", json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        code, checks, _ = _checks(site)
        assert code == 0 and checks["provider"]["status"] == "ok", checks["provider"]
        assert checks["provider"]["detail"].startswith("openai (set over the API)")
        assert fake_openai.seen == ["/v1/models"]  # with the stored key: the fake answers 401 to any other
    finally:
        site.cleanup()
    # Stopped, the connector is still listed, from the config.
    code, checks, names = _checks(site)
    assert code == 0 and "connector http/hooks" in names
    assert "not running" in checks["connector http/hooks"]["detail"]
    assert checks["provider"]["detail"].startswith("openai (set over the API)") and checks["provider"]["status"] == "ok"
    fake_openai.status = 401
    code, checks, _ = _checks(site)
    assert code == 1 and checks["provider"]["status"] == "fail"


def test_doctor_warns_of_a_low_open_files_limit(tmp_path: Path) -> None:
    import resource

    site = Site(tmp_path)

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    r = subprocess.run(site.argv("doctor", "--json"), env=site.env, capture_output=True, text=True, timeout=60,
                       preexec_fn=low_limit)  # fmt: skip
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    limit = checks["open files"]
    assert r.returncode == 0 and limit["status"] == "warn"  # a warning: the gateway still runs, with fewer sockets
    assert "soft 256, hard 256" in limit["detail"] and "lowered to 128" in limit["detail"]
    assert "LimitNOFILE" in limit["fix"]


def test_doctor_reports_a_failing_connector(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    site = Site(tmp_path)
    base = fake_openai.url.removesuffix("/v1")  # no Bot API there: every getUpdates fails
    site.config_file.write_text(
        site.config_file.read_text() + '\n[connectors.telegram.dead]\nbot_token = { value = "999:revoked" }\n'
        f'ingress_mode = "polling"\napi_base_url = "{base}"\n'
    )
    try:
        site.spawn("serve")
        site.wait_serving()

        def failing() -> tuple[int, dict[str, str]] | None:
            code, checks, _ = _checks(site)
            dead = checks.get("connector telegram/dead")
            return (code, dead) if dead is not None and dead["status"] != "ok" else None

        code, dead = wait_for(failing, timeout=60, what="the connector reported in trouble")
        assert dead["status"] in ("warn", "fail") and code == (1 if dead["status"] == "fail" else 0)
        assert "getUpdates: HTTP" in dead["detail"] and "999:revoked" not in dead["detail"]
        assert "gateway logs" in dead["fix"]
    finally:
        site.cleanup()


def test_doctor_fails_on_a_full_disk_and_warns_of_a_skewed_clock(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    site = Site(
        tmp_path,
        GATEWAY_AGENT_PROVIDER="openai",
        GATEWAY_PROVIDERS_OPENAI_BASE_URL=fake_openai.url,
        GATEWAY_PROVIDERS_OPENAI_API_KEY=API_KEY,
    )
    _make_db(site)
    free_mb = shutil.disk_usage(site.paths.data_dir).free // (1024 * 1024)
    # A floor above what is free fails; one a little under it (free < 4 x floor) warns.
    code, checks, _ = _checks(site, GATEWAY_STORAGE_MIN_FREE_DISK_MB=str(free_mb * 2 + 100))
    assert code == 1 and checks["disk"]["status"] == "fail", checks["disk"]
    assert "below storage.min_free_disk_mb" in checks["disk"]["detail"] and checks["disk"]["fix"] == "free some space"
    code, checks, _ = _checks(site, GATEWAY_STORAGE_MIN_FREE_DISK_MB=str(max(free_mb // 2, 1)))
    assert code == 0 and checks["disk"]["status"] == "warn" and "close to" in checks["disk"]["detail"]

    fake_openai.clock_offset = -3600.0  # the provider's clock an hour behind ours: ours is the suspect
    code, checks, _ = _checks(site)
    assert code == 0 and checks["clock"]["status"] == "warn", checks["clock"]
    assert "ahead of the provider's clock" in checks["clock"]["detail"] and "set-ntp" in checks["clock"]["fix"]
    r = _doctor(site)
    assert r.returncode == 0 and any(line.startswith("WARN  clock") for line in r.stdout.splitlines()), r.stdout
