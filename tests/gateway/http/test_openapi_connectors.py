"""The connector routes, `/files` and `/upload` in `/openapi.json`: present, typed from the real Structs, and true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from gateway.connectors.views import INPUTS, VIEWS, ConnectorView
from tests.conftest import TOKEN, make_config, start_gateway

OPERATIONS = {
    ("GET", "/v1/runtime/connectors"), ("GET", "/v1/runtime/connectors/{kind}/{name}"),
    ("PUT", "/v1/runtime/connectors/{kind}/{name}"), ("DELETE", "/v1/runtime/connectors/{kind}/{name}"),
    ("GET", "/v1/runtime/secrets"), ("PUT", "/v1/runtime/secrets/{slot}"), ("PUT", "/v1/runtime/personas/{persona_id}"),
    ("GET", "/v1/runtime/outbox"), ("POST", "/v1/runtime/outbox/{delivery_id}/retry"),
    ("GET", "/v1/sessions/{session_id}/reply-targets"), ("PUT", "/v1/sessions/{session_id}/reply-targets"),
    ("POST", "/v1/connectors/{kind}/{name}"), ("POST", "/v1/connectors/external/{name}/events"),
    ("POST", "/v1/connectors/external/{name}/events/batch"),
    ("GET", "/v1/connectors/external/{name}/credentials/{key}"),
    ("POST", "/v1/connectors/external/{name}/credentials/{key}"),
    ("GET", "/files"), ("POST", "/upload"),
}  # fmt: skip

# One connector of each kind, every secret field set a different way, so each view has all its parts.
BODIES: dict[str, dict[str, Any]] = {
    "http": {"bearer_token": {"value": "http-secret-1"}, "default_binding_keys": ["k"]},
    "slack": {"signing_secret": {"env": "GATEWAY_TEST_UNSET_VAR"}, "bot_token": {"value": "xoxb-1"}},
    "telegram": {"secret_token": {"value": "tg-secret-1"}, "additional_reply_targets": [
        {"plugin": "telegram", "connector": "t", "address": {"chat_id": 5}}]},
    "external": {"allow_unauthenticated_ingress": True, "platform": "demo", "max_batch_events": 10},
}  # fmt: skip


def refs(schema: Any) -> list[str]:
    """The component names a schema points at (directly or through anyOf)."""
    if isinstance(schema, dict):
        own = [schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else []
        return own + [r for k, v in schema.items() if k != "$ref" for r in refs(v)]
    return [r for v in schema for r in refs(v)] if isinstance(schema, list) else []


async def test_every_connector_and_file_route_is_documented_with_its_own_auth(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path))
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            spec = (await anon.get("/openapi.json")).json()
    ops = {(m.upper(), p): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert set(ops) >= OPERATIONS, OPERATIONS - set(ops)
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)  # OpenAPI wants them unique
    # The admin surface takes the gateway token only: a 401, never a 403 (no user role is let in).
    put_op = ops[("PUT", "/v1/runtime/connectors/{kind}/{name}")]
    assert put_op["security"] == [{"bearer": []}] and "403" not in put_op["responses"]
    assert {"200", "201", "401", "404", "409", "422"} <= set(put_op["responses"])
    kinds = next(p for p in put_op["parameters"] if p["name"] == "kind")["schema"]["enum"]
    assert sorted(kinds) == ["external", "http", "slack", "telegram"]
    choices = put_op["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert [c["$ref"].rsplit("/", 1)[1] for c in choices] == [t.__name__ for t in INPUTS]
    schemas = spec["components"]["schemas"]
    # A secret field of a body takes a SecretInput; the same field of a view is redacted metadata.
    assert refs(schemas["HttpConnectorFields"]["properties"]["bearer_token"]) == ["SecretInput"]  # or null
    assert refs(schemas["HttpConnectorView"]["properties"]["bearer_token"]) == ["SecretView"]
    assert "value" not in schemas["SecretView"]["properties"]
    # Ingress: each connector checks its own credential over the raw body; the gateway token plays no part.
    root = ops[("POST", "/v1/connectors/{kind}/{name}")]
    assert {"bearer": []} in root["security"] and {"slackSignature": []} in root["security"]
    assert {"telegramSecret": []} in root["security"] and {} in root["security"]
    assert root["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/HttpIngress")
    assert "202" in root["responses"]
    events = ops[("POST", "/v1/connectors/external/{name}/events")]
    assert events["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ExternalEvent")
    assert ops[("GET", "/v1/connectors/external/{name}/credentials/{key}")]["security"] == [{"bearer": []}]
    files = ops[("GET", "/files")]
    assert [(p["name"], p["in"], p["required"]) for p in files["parameters"]] == [("path", "query", True)]
    upload = ops[("POST", "/upload")]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(upload["properties"]) == {"file", "caption"} and upload["required"] == ["file"]
    # Query parameters of the older routes are documented too (they used to be dropped from the document).
    logs = {p["name"] for p in ops[("GET", "/api/logs")]["parameters"]}
    assert {"level", "since", "until", "q", "limit"} <= logs
    await gw.stop()


async def test_the_documented_types_match_what_the_routes_accept_and_answer(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=gw.base_url, headers=headers) as c:
            for kind, body in BODIES.items():
                # Each body is one of the documented PUT shapes, and the gateway takes it.
                msgspec.convert(body, INPUTS[list(VIEWS).index(kind)], strict=True)
                r = await c.put(f"/v1/runtime/connectors/{kind}/t", json=body)
                assert r.status_code == 201, r.text
                # The answer is exactly the kind's documented view: every field, nothing more.
                view = msgspec.convert(r.json(), VIEWS[kind], strict=True)
                assert msgspec.to_builtins(view) == r.json()
            listed = (await c.get("/v1/runtime/connectors")).json()["connectors"]
            views = msgspec.convert(listed, list[ConnectorView], strict=True)
            assert sorted(type(v).__name__ for v in views) == sorted(t.__name__ for t in VIEWS.values())
            http_view = next(v for v in listed if v["kind"] == "http")
            assert http_view["bearer_token"] == {
                "configured": True, "source": "value", "secret_ref": "connector/http/t/bearer_token", "env": None,
            }  # fmt: skip
            # The old wire behaviour holds on the registry: the token only, a 401 otherwise, the same messages.
            r = await c.get("/v1/runtime/connectors", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
            r = await c.put("/v1/runtime/secrets/s1", json={"value": ""})
            assert r.status_code == 422 and "non-empty string" in r.json()["error"]["message"]
            r = await c.put("/v1/runtime/secrets/s1", content=b"")
            assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
            r = await c.get("/v1/runtime/outbox", params={"state": "nope"})
            assert r.status_code == 422 and "pending" in r.json()["error"]["message"]
            # HEAD on a GET route is answered like the GET (it used to be a 500 on the registry's routes).
            for path in ("/v1/runtime/connectors", "/files?path=missing.txt", "/api/sessions"):
                got, head = await c.get(path), await c.head(path)
                assert head.status_code == got.status_code < 500, path
    await gw.stop()
