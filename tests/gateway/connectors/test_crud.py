"""Runtime connector CRUD: upsert semantics, per-kind validation, file connectors, deletion rules, redaction."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio

from gateway.logs import memory_handler
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, put

CANARY = "canary-secret-7f3a9c1e5b"


async def test_crud_and_field_aware_upsert(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with admin(gw) as c:
            r = await c.get("/v1/runtime/connectors")
            assert r.status_code == 200 and r.json() == {"connectors": []}
            r = await put(c, "http", "hooks", {"allow_unauthenticated_ingress": True, "actor_id": "bot"})
            assert r.status_code == 201, r.text
            assert r.json()["source"] == "daemon"
            assert r.json()["actor_id"] == "bot"
            # Field-aware: omitted fields keep their value.
            r = await put(c, "http", "hooks", {"default_binding_keys": ["k1"]})
            assert r.status_code == 200, r.text
            view = r.json()
            assert view["actor_id"] == "bot" and view["default_binding_keys"] == ["k1"]
            assert view["allow_unauthenticated_ingress"] is True
            assert view["bearer_token"] == {"configured": False, "source": None, "secret_ref": None, "env": None}
            r = await c.get("/v1/runtime/connectors/http/hooks")
            assert r.json() == view
            assert [v["name"] for v in (await c.get("/v1/runtime/connectors")).json()["connectors"]] == ["hooks"]
            r = await c.delete("/v1/runtime/connectors/http/hooks")
            assert r.status_code == 204
            assert (await c.get("/v1/runtime/connectors/http/hooks")).status_code == 404
            assert (await c.delete("/v1/runtime/connectors/http/hooks")).status_code == 404
    await gw.stop()


async def test_validation_per_kind(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with admin(gw) as c:
            cases: list[tuple[str, dict[str, Any], str]] = [
                ("http", {}, "allow_unauthenticated_ingress"),
                ("slack", {"bot_token": {"value": "xoxb-1"}}, "signing_secret"),
                ("telegram", {"ingress_mode": "polling", "allow_unauthenticated_ingress": True}, "bot_token"),
                ("telegram", {"ingress_mode": "webhook"}, "secret_token"),
                ("external", {"platform": "x"}, "shared_token"),
                ("external", {"allow_unauthenticated_ingress": True, "ingress_events_per_second": 0}, "> 0"),
                ("http", {"allow_unauthenticated_ingress": True, "bogus": 1}, "unknown field"),
                ("http", {"bearer_token": {"env": "X", "value": "y"}}, "env cannot be combined"),
                ("http", {"bearer_token": {"secret_ref": "missing-slot"}}, "does not exist"),
                ("http", {"bearer_token": "plain"}, "expected an object"),
                ("http", {"allow_unauthenticated_ingress": "yes"}, "allow_unauthenticated_ingress"),
                (
                    "http",
                    {"allow_unauthenticated_ingress": True, "session_policy": {"persona_id": "nobody"}},
                    "persona",
                ),
                ("slack", {"allow_unauthenticated_ingress": True, "api_base_url": "ftp://x"}, "api_base_url"),
                (
                    "http",
                    {
                        "allow_unauthenticated_ingress": True,
                        "default_reply_targets": [{"plugin": "slack", "connector": "s", "address": "nope"}],
                    },
                    "slack address",
                ),
            ]
            for kind, body, needle in cases:
                r = await put(c, kind, "x", body)
                assert r.status_code == 422, (kind, body, r.text)
                assert needle in r.json()["error"]["message"], (needle, r.json())
                assert r.json()["error"]["code"] == "VALIDATION_ERROR"
            assert (await put(c, "nope", "x", {})).status_code == 404
            assert (await put(c, "http", "bad name!", {})).status_code == 422
            bad_json = await c.put(
                "/v1/runtime/connectors/http/x", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert bad_json.status_code == 400
            # A persona that exists is accepted.
            assert (await c.put("/v1/runtime/personas/helper", json={"name": "Helper"})).status_code == 200
            ok = await put(
                c,
                "telegram",
                "tg",
                {
                    "bot_token": {"value": "123:abc-token"},
                    "ingress_mode": "polling",
                    "api_base_url": "http://127.0.0.1:9",
                    "session_policy": {"persona_id": "helper", "capability_scope": ["read"]},
                },
            )
            assert ok.status_code == 201, ok.text
            # Control-plane routes need the admin token.
        async with admin(gw) as c:
            c.headers["Authorization"] = "Bearer wrong-token-000000000"
            assert (await c.get("/v1/runtime/connectors")).status_code == 401
            assert (await put(c, "http", "x", {"allow_unauthenticated_ingress": True})).status_code == 401
    await gw.stop()


async def test_secrets_are_never_shown_logged_or_returned(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: object
) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    logging.getLogger("gateway").addHandler(memory_handler)
    seen: list[str] = []
    with trio.fail_after(20):
        async with admin(gw) as c:
            r = await put(c, "external", "ext", {"shared_token": {"value": CANARY}, "platform": "demo"})
            assert r.status_code == 201, r.text
            seen.append(r.text)
            meta = r.json()["shared_token"]
            assert meta == {
                "configured": True,
                "source": "value",
                "secret_ref": "connector/external/ext/shared_token",
                "env": None,
            }
            # Rotate through secret_ref to a slot created separately.
            r = await c.put("/v1/runtime/secrets/team/ext-token", json={"value": CANARY + "-2"})
            assert r.status_code == 200
            seen.append(r.text)
            r = await put(c, "external", "ext", {"shared_token": {"secret_ref": "team/ext-token"}})
            assert r.status_code == 200
            assert r.json()["shared_token"]["source"] == "secret_ref"
            seen.append(r.text)
            r = await put(c, "external", "ext", {"shared_token": {"env": "EXT_TOKEN_NOT_SET"}})
            assert r.json()["shared_token"] == {
                "configured": False,
                "source": "env",
                "secret_ref": None,
                "env": "EXT_TOKEN_NOT_SET",
            }
            seen.append(r.text)
            # Errors never echo a secret.
            r = await put(c, "external", "ext", {"shared_token": {"value": CANARY, "env": "X"}})
            assert r.status_code == 422
            seen.append(r.text)
            r = await put(c, "external", "ext", {"shared_token": {"value": CANARY}, "ingress_events_per_second": -1})
            assert r.status_code == 422
            seen.append(r.text)
            seen.append((await c.get("/v1/runtime/connectors")).text)
            seen.append((await c.get("/v1/runtime/secrets")).text)
            seen.append((await c.get("/api/status")).text)
            # The failing PUT above was rolled back: the slot still holds the previous value.
            assert r.status_code == 422
    await gw.stop()
    for text in seen:
        assert CANARY not in text
    logs = "\n".join(str(rec) for rec in memory_handler.records)
    assert CANARY not in logs
    # Connector rows never carry the secret; only the secrets table does.
    import sqlite3

    db = sqlite3.connect(paths.db_file)
    rows = db.execute("SELECT settings FROM connectors").fetchall()
    assert rows and all(CANARY.encode() not in bytes(r[0]) for r in rows)
    db.close()


async def test_file_connectors_are_read_only_and_delete_is_refused_while_referenced(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config, paths = make_config(
        tmp_path,
        connectors={
            "external": {"filed": {"allow_unauthenticated_ingress": True, "shared_token": {"value": CANARY}}},
            "slack": {
                "team": {
                    "allow_unauthenticated_ingress": True,
                    "additional_reply_targets": [
                        {"plugin": "http", "connector": "hooks", "address": "http://127.0.0.1:9/x"}
                    ],
                }
            },
        },
    )
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with admin(gw) as c:
            r = await c.get("/v1/runtime/connectors/external/filed")
            assert r.status_code == 200
            assert r.json()["source"] == "file"
            assert r.json()["shared_token"]["configured"] is True
            assert CANARY not in r.text
            assert (await put(c, "external", "filed", {"platform": "x"})).status_code == 409
            assert (await c.delete("/v1/runtime/connectors/external/filed")).status_code == 409
            assert (await put(c, "http", "hooks", {"allow_unauthenticated_ingress": True})).status_code == 201
            r = await c.delete("/v1/runtime/connectors/http/hooks")
            assert r.status_code == 409 and "slack/team" in r.json()["error"]["message"]
            # A session reply target also blocks deletion.
            assert (await put(c, "http", "other", {"allow_unauthenticated_ingress": True})).status_code == 201
            ev = await c.post(
                "/v1/connectors/http/other",
                json={
                    "binding_keys": ["b1"],
                    "content": "hi",
                    "reply_targets": [{"plugin": "http", "connector": "other", "address": "http://127.0.0.1:9/r"}],
                },
            )
            assert ev.status_code in (200, 202), ev.text
            sid = ev.json()["session_id"]
            r = await c.delete("/v1/runtime/connectors/http/other")
            assert r.status_code == 409 and "session" in r.json()["error"]["message"]
            r = await c.put(f"/v1/sessions/{sid}/reply-targets", json={"reply_targets": []})
            assert r.status_code == 200
            assert (await c.delete("/v1/runtime/connectors/http/other")).status_code == 204
            # A cron job sending to the connector's chats blocks deletion until the job is gone.
            assert (await put(c, "http", "third", {"allow_unauthenticated_ingress": True})).status_code == 201
            job = await c.post(
                "/api/cron/create",
                json={"prompt": "ping", "interval_seconds": 3600, "connector": "http:third", "chat_id": "42"},
            )
            assert job.status_code in (200, 201), job.text
            r = await c.delete("/v1/runtime/connectors/http/third")
            assert r.status_code == 409 and "cron" in r.json()["error"]["message"]
            assert (await c.delete(f"/api/cron/{job.json()['id']}")).status_code in (200, 204)
            assert (await c.delete("/v1/runtime/connectors/http/third")).status_code == 204
    await gw.stop()


def test_a_bad_connector_in_the_config_file_is_a_config_error() -> None:
    import pytest

    from gateway.config.file import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"connectors\.http\.x.*allow_unauthenticated_ingress"):
        parse_config({"connectors": {"http": {"x": {}}}})
    with pytest.raises(ConfigError, match="unknown connector kind"):
        parse_config({"connectors": {"irc": {"x": {}}}})
    with pytest.raises(ConfigError, match="env cannot be combined"):
        parse_config({"connectors": {"http": {"x": {"bearer_token": {"env": "A", "value": "b"}}}}})
    ok = parse_config({"connectors": {"external": {"e": {"shared_token": {"env": "E_TOKEN"}}}}})
    assert ok.connectors["external"]["e"]["shared_token"] == {"env": "E_TOKEN"}


async def test_rotating_a_secret_takes_effect_at_once(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    events = "/v1/connectors/external/{name}/events"

    async def ingest(c: Any, name: str, token: str, event_id: str) -> int:
        r = await c.post(
            events.format(name=name),
            json={"event_id": event_id, "routing_key": "rk", "content": "hi"},
            headers={"Authorization": f"Bearer {token}"},
        )
        return int(r.status_code)

    with trio.fail_after(30):
        async with admin(gw) as c:
            # Through the secrets API: the connectors reading the slot are restarted with the new value.
            assert (await c.put("/v1/runtime/secrets/team/ext", json={"value": "first-shared-token-0001"})).is_success
            r = await put(c, "external", "byref", {"shared_token": {"secret_ref": "team/ext"}})
            assert r.status_code == 201, r.text
            assert await ingest(c, "byref", "first-shared-token-0001", "e1") == 200
            r = await c.put("/v1/runtime/secrets/team/ext", json={"value": "second-shared-token-002"})
            assert r.status_code == 200 and r.json()["restarted"] == ["external/byref"]
            assert await ingest(c, "byref", "first-shared-token-0001", "e2") == 401
            assert await ingest(c, "byref", "second-shared-token-002", "e3") == 200
            # Through the connector: a new `{value}` replaces the old one in its slot.
            assert (await put(c, "external", "own", {"shared_token": {"value": "own-token-one-000001"}})).is_success
            assert await ingest(c, "own", "own-token-one-000001", "o1") == 200
            assert (await put(c, "external", "own", {"shared_token": {"value": "own-token-two-000002"}})).is_success
            assert await ingest(c, "own", "own-token-one-000001", "o2") == 401
            assert await ingest(c, "own", "own-token-two-000002", "o3") == 200
            # The secrets listing names slots, never values.
            listing = (await c.get("/v1/runtime/secrets")).text
            assert "team/ext" in listing
            assert "second-shared-token-002" not in listing and "own-token-two-000002" not in listing
    await gw.stop()
