"""Schemathesis fuzzes every operation of `/openapi.json` on a live gateway: no 5xx, no response off its schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import TOKEN, make_config, start_gateway


@pytest.mark.slow
@pytest.mark.longest
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # Rate limits off: the fuzzer sends bursts, and a 429 would only hide what lies behind it.
    # One connector of each kind, so the ingress routes reach a running connector: the external one is open
    # (no reply targets, no base_url: its fuzzed events become turns and nothing leaves the machine); the http,
    # slack and telegram ones hold credentials the fuzzer does not know (an http event may name its own reply URL,
    # slack and telegram replies would go to their APIs), so they answer 401.
    connectors = {
        "external": {"fuzz": {"allow_unauthenticated_ingress": True}},
        "http": {"fuzz": {"bearer_token": {"value": "fuzz-http-secret"}}},
        "slack": {"fuzz": {"signing_secret": {"value": "fuzz-slack-secret"}, "api_base_url": "http://127.0.0.1:9"}},
        "telegram": {"fuzz": {"secret_token": {"value": "fuzz-tg-secret"}, "api_base_url": "http://127.0.0.1:9"}},
    }
    gw = await start_gateway(nursery, *make_config(tmp_path, limits={"enabled": False}, connectors=connectors))
    # Not fuzzed: operations that would start a fuzzed command (an MCP stdio server, an external connector's
    # child_process) or send requests to a fuzzed address (the LLM endpoint, an A2A card, a GitHub skill; a
    # connector's api_base_url, base_url or telegram polling; a session's reply targets, where the outbox would
    # deliver), or out of the machine (the provider probe: openai's default base URL is api.openai.com). Their
    # validation has tests of its own (tests/gateway/connectors/test_crud.py for the connector two, the probe's in
    # tests/gateway/http/test_webui_config.py and test_agent_config_rest.py). The sessions list stream never ends by
    # itself (tests/gateway/http/test_rest_seed.py reads it), nor does the notification stream
    # (tests/gateway/http/test_notifications_stream.py).
    excluded = [
        "post_post_mcp", "post_post_llm", "post_post_a2a", "post_install_skill",
        "put_put_connector", "put_put_reply_targets", "post_stream_sessions", "get_probe_provider",
        "get_stream_notifications",
    ]  # fmt: skip
    async with httpx.AsyncClient() as client:
        spec = (await client.get(f"{gw.base_url}/openapi.json")).json()
    ids = {op["operationId"] for item in spec["paths"].values() for op in item.values()}
    assert set(excluded) <= ids, "an excluded operation was renamed: exclude it under its new id"
    # The connector routes name the connectors above, or every request would stop at a 404 for an unknown name.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[[operations]]\ninclude-path-regex = "^/v1/(runtime/)?connectors/"\n'
                      'parameters = { "path.name" = "fuzz" }\n')  # fmt: skip
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
        "run", f"{gw.base_url}/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--max-examples", "20", "--phases", "examples,coverage,fuzzing",
        "--generation-deterministic", "--request-timeout", "30",
        *(arg for op in excluded for arg in ("--exclude-operation-id", op)),
    ]  # fmt: skip
    with trio.fail_after(400):
        # cwd: schemathesis keeps a cache folder where it runs; keep it out of the work tree.
        result = await trio.run_process(
            command, capture_stdout=True, stderr=subprocess.STDOUT, check=False, cwd=tmp_path
        )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert "passed" in output and "Server error" not in output
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        status = (await client.get(f"{gw.base_url}/api/status")).json()
    check = next(s for s in status["services"] if s["service"] == "connectors")
    # The fuzzed events reached the external connector and were dispatched as turns: ingress was exercised.
    assert check["details"]["_ingress"]["dispatched"] > 0, check
    with trio.fail_after(10):
        await gw.stop()
