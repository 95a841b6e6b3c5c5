"""docs/proxy.md's nginx config, run with Debian's nginx and a self-signed certificate in front of a real gateway."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from trio_websocket import open_websocket_url

from gateway.ws.client import handshake_v1
from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.harness import free_port, require_program
from tests.gateway.http.test_auth_throttle import FREE, check_429, until_throttled

ROOT = Path(__file__).resolve().parents[3]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The documented block's stand-ins, each replaced for the test (and each must still be in the doc).
NAME = "gateway.example.org"
CERT, KEY = "/etc/ssl/gateway/fullchain.pem", "/etc/ssl/gateway/privkey.pem"
UPSTREAM, HTTPS, HTTP = "http://127.0.0.1:8741;", "listen 443 ssl;", "listen 80;"
# The fake agent streams a first line, then holds its turn open until the test opens the gate named by the prompt:
# an event that reaches the client before the gate opens was not held back by the proxy.
AGENT = """
import os, sys, time
prompt = sys.stdin.read().strip()
print(f"first line of {prompt}", flush=True)
while not os.path.exists(os.path.join(sys.argv[1], prompt)):
    time.sleep(0.02)
print("last line", flush=True)
"""


def documented_config() -> str:
    """The nginx block of docs/proxy.md, as a reader copies it."""
    match = re.search(r"```nginx\n(.*?)```", (ROOT / "docs" / "proxy.md").read_text(), re.S)
    assert match, "docs/proxy.md lost its nginx block"
    return match[1]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and `NAME`), valid for a day, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def nginx_conf(folder: Path, gateway_port: int, https_port: int, http_port: int) -> Path:
    cert, key = self_signed(folder)
    block = documented_config()
    for stand_in, value in (
        (UPSTREAM, f"http://127.0.0.1:{gateway_port};"),
        (HTTPS, f"listen 127.0.0.1:{https_port} ssl;"),
        (HTTP, f"listen 127.0.0.1:{http_port};"),
        (CERT, str(cert)),
        (KEY, str(key)),
    ):
        assert stand_in in block, f"docs/proxy.md's nginx block no longer has {stand_in!r}"
        block = block.replace(stand_in, value)
    # Only what a system's /etc/nginx/nginx.conf gives the block, made to live in the test's folder.
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = folder / "nginx.conf"
    conf.write_text(
        f"user {getpass.getuser()};\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n    access_log off;\n{temp}\n{block}\n}}\n"
    )
    return conf


@dataclass
class Proxied:
    gw: RunningGateway
    https: str  # https://127.0.0.1:PORT
    http: str
    ssl: ssl.SSLContext  # trusts the test's certificate only
    gates: Path


@pytest.fixture
async def proxied(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Proxied]:
    require_program(NGINX, "nginx")
    (tmp_path / "agent.py").write_text(AGENT)
    gates = tmp_path / "gates"
    gates.mkdir()
    config, paths = make_config(
        tmp_path,
        server={"trusted_proxies": ["127.0.0.1"]},
        agent={"provider": "cli"},
        providers={"cli": {"argv": [sys.executable, str(tmp_path / "agent.py"), str(gates)]}},
        limits={"failed_auth_free": FREE, "auth_burst": 1000, "auth_per_minute": 60000},
    )
    gw = await start_gateway(nursery, config, paths)
    folder = tmp_path / "nginx"
    folder.mkdir()
    https_port, http_port = free_port(), free_port()
    conf = nginx_conf(folder, int(gw.base_url.rsplit(":", 1)[1]), https_port, http_port)
    log = folder / "error.log"  # startup errors included (-e)
    proc = await trio.lowlevel.open_process(
        [NGINX, "-e", str(log), "-p", str(folder), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = ssl.create_default_context(cafile=str(folder / "cert.pem"))
    try:
        with trio.fail_after(30):
            while True:  # nginx is up when its TLS port answers
                assert proc.poll() is None, f"nginx exited: {log.read_text() if log.exists() else ''}"
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", https_port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        yield Proxied(gw, f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", context, gates)
    finally:
        with trio.CancelScope(shield=True):
            proc.terminate()  # nginx's fast shutdown
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            with trio.fail_after(15):
                await gw.stop()


async def turn_state(gw: RunningGateway) -> list[str]:
    def q(conn: Any) -> list[str]:
        return [r[0] for r in conn.execute("SELECT state FROM turns ORDER BY id")]

    return await gw.runtime.store.call(q)


async def test_a_ws_turn_streams_through_the_proxy_over_tls(proxied: Proxied) -> None:
    with trio.fail_after(60):
        url = proxied.https.replace("https://", "wss://") + "/ws"
        async with open_websocket_url(url, ssl_context=proxied.ssl) as ws:
            client = await handshake_v1(ws, TOKEN, chat_id=None, channel_id=None, resume_from=None)
            await client.send_message("ws-turn")
            while (frame := await client.receive())["type"] != "text_delta":
                pass
            assert frame["data"].startswith("first line of ws-turn")
            assert await turn_state(proxied.gw) == ["running"]  # held open by the gate: nothing buffered it
            (proxied.gates / "ws-turn").touch()
            while (frame := await client.receive())["type"] != "result":  # v1's last frame of a turn
                pass
            assert frame["text"] == "first line of ws-turn\nlast line\n"


async def sse_lines(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The events of an SSE body, each as soon as its blank line arrives."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "" and event:
            yield event
            event = {}
        elif line.startswith(("event: ", "data: ")):
            field, _, value = line.partition(": ")
            event[field] = msgspec.json.decode(value) if field == "data" else value


async def test_an_sse_chat_is_not_buffered_by_the_proxy(proxied: Proxied) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=proxied.https, verify=proxied.ssl, headers=headers, timeout=30) as c:
        with trio.fail_after(60):
            sid = (await c.post("/api/sessions", json={})).json()["session_id"]
            async with c.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "sse-turn"}) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                kinds = []
                async for event in sse_lines(r):
                    kinds.append(event["event"])
                    if event["event"] == "text_delta" and not (proxied.gates / "sse-turn").exists():
                        assert event["data"]["data"].startswith("first line of sse-turn")
                        assert await turn_state(proxied.gw) == ["running"]
                        (proxied.gates / "sse-turn").touch()
            assert kinds[0] == "turn_accepted" and kinds[-1] == "turn_ended" and "result" in kinds
            assert (proxied.gates / "sse-turn").exists()
        # Plain HTTP only redirects.
        async with httpx.AsyncClient(base_url=proxied.http) as plain:
            r = await plain.get("/health")
            assert r.status_code == 301 and r.headers["location"].startswith("https://127.0.0.1/")


def from_address(proxied: Proxied, source: str, token: str, **headers: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source, verify=proxied.ssl)
    headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(base_url=proxied.https, headers=headers, transport=transport, timeout=30)


async def test_clients_behind_the_proxy_are_throttled_apart_and_cannot_spoof(proxied: Proxied) -> None:
    with trio.fail_after(60):
        async with from_address(proxied, "127.0.0.2", "wrong-token-0123456789") as guesser:
            statuses, r = await until_throttled(lambda: guesser.get("/api/status"))
            assert set(statuses) == {401}
            check_429(r)
        async with (
            from_address(proxied, "127.0.0.2", TOKEN) as same,
            # A header the client writes lies left of what nginx appends: it buys no fresh address.
            from_address(proxied, "127.0.0.2", TOKEN, **{"X-Forwarded-For": "198.51.100.9"}) as spoofing,
            from_address(proxied, "127.0.0.3", TOKEN) as other,
        ):
            assert (await same.get("/api/status")).status_code == 429
            assert (await spoofing.get("/api/status")).status_code == 429
            assert (await other.get("/api/status")).status_code == 200
