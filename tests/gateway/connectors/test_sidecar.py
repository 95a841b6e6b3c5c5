"""External sidecars as real child processes: manifest/health checks, restarts, on-demand credentials, /deliver."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.daemon.procs import is_alive
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, connector_status, put, wait_for

PLATFORM_SECRET = "platform-canary-secret-5d1e"
SHARED = "shared-token-sidecar-000111"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sidecar_lifecycle_credentials_and_delivery(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("SIDE_VISIBLE", "yes")
    monkeypatch.setenv("PLATFORM_API_KEY", "must-not-be-injected")
    out = tmp_path / "sidecar"
    out.mkdir()
    port = free_port()
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    app = Path(__file__).with_name("sidecar_app.py")
    with trio.fail_after(60):
        async with admin(gw) as c:
            r = await c.put("/v1/runtime/secrets/platform/api-key", json={"value": PLATFORM_SECRET})
            assert r.status_code == 200
            r = await put(
                c,
                "external",
                "side",
                {
                    "shared_token": {"value": SHARED},
                    "mode": "sidecar",
                    "base_url": f"http://127.0.0.1:{port}",
                    "include_self_output": True,
                    "child_process": {
                        "command": [sys.executable, str(app), str(out)],
                        "env_keys": ["SIDE_VISIBLE"],
                        "credential_env_keys": ["PLATFORM_API_KEY"],
                        "credential_slots": {"PLATFORM_API_KEY": "platform/api-key"},
                    },
                },
            )
            assert r.status_code == 201, r.text

            async def started() -> list[Path]:
                return sorted(out.glob("start-*.json"))

            first = (await wait_for(started))[0]
            info = json.loads(first.read_text())
            # The secret came from the gateway on demand, never through the environment.
            assert info["creds"] == {"PLATFORM_API_KEY": PLATFORM_SECRET}
            assert "PLATFORM_API_KEY" not in info["env"]
            assert info["env"]["SIDE_VISIBLE"] == "yes"
            assert PLATFORM_SECRET not in json.dumps(info["env"])
            token = info["env"]["GATEWAY_CREDENTIAL_TOKEN"]

            async def running() -> dict[str, Any] | None:
                st = await connector_status(c, "external/side")
                return st if st.get("sidecar", {}).get("health") == "ready" else None

            st = await wait_for(running)
            pid = st["sidecar"]["pid"]
            # The token only grants the listed keys, and only this connector's.
            cred_url = "/v1/connectors/external/side/credentials"
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as s:
                assert (
                    await s.get(f"{cred_url}/OTHER", headers={"Authorization": f"Bearer {token}"})
                ).status_code == 403
                assert (await s.get(f"{cred_url}/PLATFORM_API_KEY")).status_code == 401

            # A sidecar that dies is restarted, with a fresh token; the old one is revoked.
            os.kill(pid, signal.SIGKILL)

            async def restarted() -> dict[str, Any] | None:
                st = await connector_status(c, "external/side")
                ok = st["restarts"] >= 1 and st.get("sidecar", {}).get("health") == "ready"
                return st if ok and st["sidecar"]["pid"] != pid else None

            await wait_for(restarted, timeout=30)
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as s:
                old = await s.get(f"{cred_url}/PLATFORM_API_KEY", headers={"Authorization": f"Bearer {token}"})
                assert old.status_code == 401

                # Ingress, then the agent's answer is delivered to the sidecar's /deliver.
                r = await s.post(
                    "/v1/connectors/external/side/events",
                    json={
                        "event_id": "e1",
                        "routing_key": "chan-1",
                        "content": "to the sidecar",
                        "reply_route": {"channel": "chan-1"},
                    },
                    headers={"Authorization": f"Bearer {SHARED}"},
                )
                assert r.status_code == 200, r.text

            async def delivered() -> list[dict[str, Any]]:
                f = out / "deliveries.jsonl"
                return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []

            d = (await wait_for(delivered))[0]
            assert d["body"]["text"] == "to the sidecar" and d["body"]["route"] == {"channel": "chan-1"}
            assert d["key"] == d["body"]["delivery_id"]
            # Deleting the connector stops its sidecar (once no session replies through it any more).
            new_pid = (await connector_status(c, "external/side"))["sidecar"]["pid"]
            assert (await c.delete("/v1/runtime/connectors/external/side")).status_code == 409  # reply targets
            sid = r.json()["session_id"]
            assert (await c.put(f"/v1/sessions/{sid}/reply-targets", json={"reply_targets": []})).status_code == 200
            assert (await c.delete("/v1/runtime/connectors/external/side")).status_code == 204

            async def gone() -> bool:
                return not is_alive(new_pid)

            await wait_for(gone)
    await gw.stop()
    log_text = "\n".join(str(x) for x in (tmp_path / "data").rglob("*.log"))
    assert PLATFORM_SECRET not in log_text


async def test_a_sidecar_fetching_its_credentials_at_start_starts_once_with_the_gateway(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    out = tmp_path / "sidecar"
    out.mkdir()
    config, paths = make_config(tmp_path)
    app = Path(__file__).with_name("sidecar_app.py")
    body = {
        "shared_token": {"value": SHARED},
        "mode": "sidecar",
        "base_url": f"http://127.0.0.1:{free_port()}",
        "child_process": {
            "command": [sys.executable, str(app), str(out)],
            "credential_env_keys": ["PLATFORM_API_KEY"],
            "credential_slots": {"PLATFORM_API_KEY": "platform/api-key"},
        },
    }

    async def started() -> list[Path]:
        return sorted(out.glob("start-*.json"))

    with trio.fail_after(60):
        gw = await start_gateway(nursery, config, paths)
        async with admin(gw) as c:
            assert (await c.put("/v1/runtime/secrets/platform/api-key", json={"value": PLATFORM_SECRET})).is_success
            assert (await put(c, "external", "side", body)).status_code == 201
            await wait_for(started)
        await gw.stop()
        for f in out.iterdir():
            f.unlink()
        # The stored connector starts with the next gateway: its sidecar asks for its credentials at once.
        gw = await start_gateway(nursery, config, paths)
        try:
            info = json.loads((await wait_for(started))[0].read_text())
            assert info["creds"] == {"PLATFORM_API_KEY": PLATFORM_SECRET}
            assert info["env"]["GATEWAY_CREDENTIAL_URL"].startswith(gw.base_url + "/")
            async with admin(gw) as c:

                async def ready() -> dict[str, Any] | None:
                    st = await connector_status(c, "external/side")
                    return st if st.get("sidecar", {}).get("health") == "ready" else None

                st = await wait_for(ready)
                # Launched once: it was not spawned before the gateway listened, failed and restarted.
                assert st["restarts"] == 0 and st["last_error"] is None, st
                assert len(list(out.glob("launch-*"))) == 1
                assert (await c.get("/api/status")).status_code == 200
        finally:
            await gw.stop()


async def test_a_sidecar_announcing_another_protocol_is_refused_and_restarted(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    out = tmp_path / "sidecar"
    out.mkdir()
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    app = Path(__file__).with_name("sidecar_app.py")
    with trio.fail_after(60):
        async with admin(gw) as c:
            r = await put(
                c,
                "external",
                "future",
                {
                    "allow_unauthenticated_ingress": True,
                    "mode": "sidecar",
                    "base_url": f"http://127.0.0.1:{free_port()}",
                    "child_process": {"command": [sys.executable, str(app), str(out), "7"]},
                },
            )
            assert r.status_code == 201, r.text

            async def refused() -> dict[str, Any] | None:
                st = await connector_status(c, "external/future")
                error = st.get("last_error") or ""
                return st if st["restarts"] >= 2 and "protocol 7" in error else None

            st = await wait_for(refused, timeout=40, interval=0.5)
            # The health page names the real cause, not the nursery groups wrapped around it.
            assert st["last_error"] == "SidecarError: sidecar manifest announces protocol 7; expected 1"
            assert st["sidecar"]["health"] is None, "a refused sidecar is never reported healthy"
            # Each refused life was a real process, and each was stopped before the next began.
            starts = sorted(out.glob("start-*.json"))
            assert len(starts) >= 2
            pids = [int(p.stem.split("-")[1]) for p in starts]
            assert not any(is_alive(pid) for pid in pids[:-1])
    await gw.stop()


def test_sidecar_credential_tokens_expire_and_are_bound_to_one_connector() -> None:
    import pytest

    from gateway.connectors.base import SidecarTokens
    from gateway.errors import UnauthorizedError

    tokens = SidecarTokens()
    live = tokens.issue("external/a", {"KEY": "slot"}, ttl=3600)
    assert tokens.check(live, "external/a").keys == {"KEY": "slot"}
    with pytest.raises(UnauthorizedError):
        tokens.check(live, "external/b")
    expired = tokens.issue("external/a", {"KEY": "slot"}, ttl=-1)
    with pytest.raises(UnauthorizedError):
        tokens.check(expired, "external/a")
    tokens.revoke(live)
    with pytest.raises(UnauthorizedError):
        tokens.check(live, "external/a")
    assert len(live) >= 40 and live != expired


def _health_checked(out: Path, health: str, **child: Any) -> dict[str, Any]:
    app = Path(__file__).with_name("sidecar_app.py")
    return {
        "allow_unauthenticated_ingress": True,
        "mode": "sidecar",
        "base_url": f"http://127.0.0.1:{free_port()}",
        "child_process": {"command": [sys.executable, str(app), str(out), "1", health], **child},
    }


@pytest.mark.parametrize(("health", "seen"), [("degraded", "degraded"), ("broken", "unreachable")])
async def test_a_sidecar_that_stays_unhealthy_is_restarted(
    nursery: trio.Nursery, tmp_path: Path, health: str, seen: str
) -> None:
    # Alive, serving its manifest, but reporting `degraded` (or answering /health with junk) check after check.
    out = tmp_path / "sidecar"
    out.mkdir()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    with trio.fail_after(60):
        async with admin(gw) as c:
            body = _health_checked(out, health, health_interval_seconds=0.1, max_failed_health_checks=3)
            r = await put(c, "external", "sick", body)
            assert r.status_code == 201, r.text
            assert r.json()["child_process"]["max_failed_health_checks"] == 3

            async def restarted() -> dict[str, Any] | None:
                st = await connector_status(c, "external/sick")
                return st if st["restarts"] >= 1 and len(list(out.glob("start-*.json"))) >= 2 else None

            st = await wait_for(restarted, timeout=40, interval=0.1)
            assert st["last_error"] == (
                f"SidecarError: sidecar health was {seen!r} on 3 checks in a row "
                "(max_failed_health_checks=3); restarting it"
            )
            first = min(out.glob("start-*.json"), key=lambda p: p.stat().st_mtime)
            pid = int(first.stem.split("-")[1])
            # It was asked exactly as often as allowed, then stopped before the next one started.
            assert (out / f"health-{pid}.log").read_text().splitlines() == [health] * 3
            assert not is_alive(pid)
    await gw.stop()


async def test_a_healthy_sidecar_is_left_alone(nursery: trio.Nursery, tmp_path: Path) -> None:
    out = tmp_path / "sidecar"
    out.mkdir()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    with trio.fail_after(60):
        async with admin(gw) as c:
            body = _health_checked(out, "ready", health_interval_seconds=0.1, max_failed_health_checks=1)
            assert (await put(c, "external", "fine", body)).status_code == 201

            async def checked_often() -> list[str] | None:
                logs = list(out.glob("health-*.log"))
                lines = logs[0].read_text().splitlines() if logs else []
                return lines if len(lines) >= 10 else None

            await wait_for(checked_often, timeout=40)
            st = await connector_status(c, "external/fine")
            assert st["restarts"] == 0 and st["last_error"] is None and len(list(out.glob("start-*.json"))) == 1
            assert st["sidecar"]["health"] == "ready" and st["sidecar"]["failed_health_checks"] == 0
            for bad in ({"health_interval_seconds": 0.01}, {"max_failed_health_checks": -1}):
                r = await put(c, "external", "fine", _health_checked(out, "ready", **bad))
                assert r.status_code == 422 and "child_process." in r.json()["error"]["message"], r.text
    await gw.stop()
