"""Agent settings over a real gateway: LLM config with a secret key, agent limits, models.json, auth_ok, a turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import logging_to, of_type, sse_turn, use_fake_openai
from tests.gateway.rest import admin_client, error_of, register
from tests.gateway.wshelpers import client, deltas, until

CANARY = "sk-canary-7f3a9c1e5b"


async def test_llm_config_auth_and_validation(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with admin_client(gateway) as admin, httpx.AsyncClient(base_url=gateway.base_url) as anon:
            r = await admin.get("/api/app-config/llm")
            assert r.status_code == 200
            assert r.json() == {
                "base_url": "https://api.openai.com/v1", "model_name": "gpt-4o-mini", "temperature": None,
                "max_tokens": None, "provider": "echo", "api_key_configured": False,
            }  # fmt: skip
            assert (await anon.get("/api/app-config/llm")).status_code == 401
            assert error_of(await anon.post("/api/app-config/llm", json={}))["code"] == "UNAUTHORIZED"
            user = await register(gateway, "plain")  # the first user is the super admin
            plain = await register(gateway, "plainer")
            assert (await plain.client.get("/api/app-config/llm")).status_code == 200
            forbidden = await plain.client.post("/api/app-config/llm", json={"model_name": "x"})
            assert forbidden.status_code == 403 and error_of(forbidden)["code"] == "FORBIDDEN"
            for body, field in [
                ({"temperature": 3}, "temperature"),
                ({"max_tokens": 0}, "max_tokens"),
                ({"base_url": "ftp://example"}, "base_url"),
                ({"api_key": "two\nlines"}, "api_key"),
                ({"provider": "nope"}, "provider"),
                ({"model_name": ""}, "model_name"),
            ]:
                r = await admin.post("/api/app-config/llm", json=body)
                assert r.status_code == 422, (body, r.text)
                err = error_of(r)
                assert err["details"][0]["loc"] == ["body", field], err
            unknown = error_of(await admin.post("/api/app-config/llm", json={"colour": "red"}))
            assert "colour" in unknown["message"]
            await user.client.aclose()
            await plain.client.aclose()


async def test_openai_configured_over_rest_streams_a_turn_and_never_shows_the_key(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    config, paths = make_config(tmp_path)
    seen: list[str] = []  # every response body, to look for the key afterwards
    with logging_to(tmp_path / "gateway.log") as log_file, trio.fail_after(60):
        gw = await start_gateway(nursery, config, paths)
        async with admin_client(gw) as admin:
            view = await use_fake_openai(admin, base, api_key=CANARY, temperature=0.3, max_tokens=64)
            assert view == {
                "base_url": base, "model_name": "fake-gpt", "temperature": 0.3, "max_tokens": 64,
                "provider": "openai", "api_key_configured": True,
            }  # fmt: skip
            seen.append(str(view))
            providers = (await admin.get("/api/providers")).json()["providers"]
            assert {p["name"]: p["active"] for p in providers} == {"echo": False, "openai": True}
            models = (await admin.get("/api/models")).json()
            assert models["active_provider"] == "openai" and models["active_model"] == "fake-gpt"
            assert {"id": "fake-gpt", "provider": "openai"} in models["models"]
            seen += [str(providers), str(models)]

            # The web UI's path: /ws reports the provider and model, then streams the turn.
            fake.scripts.append(Script(texts=["Hel", "lo ", "there"]))
            async with client(gw) as c:
                assert c.auth_ok["active_provider"] == "openai"
                assert c.auth_ok["active_model"] == "fake-gpt"
                assert "openai" in {p["name"] for p in c.auth_ok["providers"]}
                await c.send_message("hi")
                frames = await until(c, "result")
                seen.append(str(c.auth_ok) + str(frames))
            assert deltas(frames) == "Hello there" and frames[-1]["text"] == "Hello there"
            sent = fake.requests[-1]
            assert sent["model"] == "fake-gpt" and sent["temperature"] == 0.3 and sent["max_tokens"] == 64
            assert sent["messages"][-1] == {"role": "user", "content": "hi"}
            assert fake.headers[-1]["authorization"] == f"Bearer {CANARY}"
            # An endpoint that echoes the key it refused: neither the client nor the log sees the key.
            fake.scripts.append(Script(status=401, error=f"Incorrect API key provided: {CANARY}"))
            async with client(gw) as c:
                await c.send_message("with a refused key")
                failed = await until(c, "error")
                seen.append(str(failed))
            assert "Incorrect API key provided: [redacted]" in failed[-1]["message"]

            # An empty key keeps the stored one; the new model is used by the very next turn, no restart.
            r = await admin.post("/api/app-config/llm", json={"api_key": "", "model_name": "fake-gpt-2"})
            assert r.json()["api_key_configured"] is True and "api_key" not in r.json()
            seen.append(r.text)
            user = await register(gw, "ann")
            sid = (await user.client.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.append(Script(texts=["again"]))
            events = await sse_turn(user.client, sid, "once more")
            seen.append(str(events))
            assert of_type(events, "result")[0]["text"] == "again"
            assert fake.requests[-1]["model"] == "fake-gpt-2"
            assert fake.headers[-1]["authorization"] == f"Bearer {CANARY}"
            # null goes back to the config file's value.
            r = await admin.post("/api/app-config/llm", json={"temperature": None})
            assert r.json()["temperature"] is None
            for path in ("/api/app-config/llm", "/api/logs?limit=1000", "/api/status", "/openapi.json"):
                seen.append((await admin.get(path)).text)
            await user.client.aclose()
        await gw.stop()

        # The settings and the key survive a restart.
        gw = await start_gateway(nursery, config, paths)
        async with admin_client(gw) as admin:
            r = await admin.get("/api/app-config/llm")
            assert r.json()["model_name"] == "fake-gpt-2" and r.json()["api_key_configured"] is True
            seen.append(r.text)
            fake.scripts.append(Script(texts=["back"]))
            async with client(gw) as c:
                assert c.auth_ok["active_provider"] == "openai"
                await c.send_message("after restart")
                assert deltas(await until(c, "result")) == "back"
            assert fake.headers[-1]["authorization"] == f"Bearer {CANARY}"
        await gw.stop()
    assert all(CANARY not in text for text in seen)
    logged = log_file.read_text()
    assert "listening on" in logged and "Incorrect API key provided" in logged  # the file got the lines
    assert CANARY not in logged


async def test_the_probe_really_tries_the_provider(nursery: trio.Nursery, gateway: RunningGateway) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    fake.key = CANARY
    with trio.socket.socket() as closed:  # bound, never listening: a connection to it is refused
        await closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        with trio.fail_after(30):
            async with admin_client(gateway) as admin:

                async def probe(name: str) -> dict[str, Any]:
                    r = await admin.get(f"/api/providers/{name}/probe")
                    assert r.status_code == 200, r.text
                    body: dict[str, Any] = r.json()
                    assert CANARY not in r.text
                    return body

                assert (await probe("echo"))["status"] == "ok"
                await use_fake_openai(admin, base, api_key=CANARY)
                found = await probe("openai")
                assert found == {"name": "openai", "status": "ok", "detail": f"{base}/models answered HTTP 200"}
                assert fake.listings[-1]["authorization"] == f"Bearer {CANARY}"  # it tries with the stored key
                await use_fake_openai(admin, base, api_key="sk-a-key-the-fake-refuses")
                refused = await probe("openai")
                assert refused["status"] == "error" and "HTTP 401" in refused["detail"], refused
                assert "Incorrect API key provided" in refused["detail"]
                assert "sk-a-key-the-fake-refuses" not in refused["detail"], "the endpoint quoted it: redacted"
                await use_fake_openai(admin, nobody)
                down = await probe("openai")
                assert down["status"] == "unreachable" and "ConnectError" in down["detail"], down
                # Listed as before: `available` says it is configured; only the probe says whether it answers.
                listed = {p["name"]: p for p in (await admin.get("/api/providers")).json()["providers"]}
                assert listed["openai"]["available"] is True
                missing = await admin.get("/api/providers/nope/probe")
                assert missing.status_code == 404 and error_of(missing)["code"] == "PROVIDER_NOT_FOUND"


async def test_agent_limits(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with admin_client(gateway) as admin:
            r = await admin.get("/api/app-config/agent")
            assert r.json() == {"max_iterations": 8, "max_retries": 3, "max_search_results": 10}
            r = await admin.post("/api/app-config/agent", json={"max_iterations": 2})
            assert r.json() == {"max_iterations": 2, "max_retries": 3, "max_search_results": 10}
            r = await admin.post("/api/app-config/agent", json={"max_retries": 0, "max_search_results": 5})
            assert r.json() == {"max_iterations": 2, "max_retries": 0, "max_search_results": 5}
            openai: Any = gateway.runtime.providers["openai"]
            assert (openai.settings.max_iterations, openai.settings.max_retries) == (2, 0)
            for body, field in [({"max_iterations": 0}, "max_iterations"), ({"max_retries": -1}, "max_retries"),
                                ({"max_iterations": "many"}, "max_iterations")]:  # fmt: skip
                r = await admin.post("/api/app-config/agent", json=body)
                assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body", field]
            await register(gateway, "boss")
            plain = await register(gateway, "pat")
            assert (await plain.client.get("/api/app-config/agent")).status_code == 200
            assert (await plain.client.post("/api/app-config/agent", json={"max_retries": 1})).status_code == 403
            await plain.client.aclose()


async def test_models_json_merges_and_feeds_the_model_list(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with admin_client(gateway) as admin, httpx.AsyncClient(base_url=gateway.base_url) as anon:
            assert (await admin.get("/api/models-json")).json() == {}
            patch = {"providers": {"openai": {"models": ["m-small", {"id": "m-large", "label": "Large"}]}}, "v": 1}
            r = await admin.patch("/api/models-json", json=patch)
            assert r.status_code == 200 and r.json() == patch
            r = await admin.patch("/api/models-json", json={"v": None, "note": "x"})
            assert r.json() == {"providers": patch["providers"], "note": "x"}
            assert (await admin.get("/api/models-json")).json() == r.json()
            models = [m["id"] for m in (await admin.get("/api/models")).json()["models"] if m["provider"] == "openai"]
            assert models == ["gpt-4o-mini", "m-small", "m-large"]
            openai = next(p for p in (await admin.get("/api/providers")).json()["providers"] if p["name"] == "openai")
            assert openai["models"] == models
            r = await admin.patch("/api/models-json", json={"providers": {"openai": None}})
            assert r.json() == {"providers": {}, "note": "x"}
            assert (await admin.patch("/api/models-json", json=[1, 2])).status_code == 422
            assert error_of(await admin.patch("/api/models-json", json={"providers": 3}))["code"] == "VALIDATION_ERROR"
            big = {"blob": "x" * 300_000}
            assert (await admin.patch("/api/models-json", json=big)).status_code == 413
            assert (await anon.get("/api/models-json")).status_code == 401
            await register(gateway, "root")
            plain = await register(gateway, "joe")
            assert (await plain.client.get("/api/models-json")).status_code == 200
            assert (await plain.client.patch("/api/models-json", json={"a": 1})).status_code == 403
            await plain.client.aclose()


async def test_abort_over_ws_closes_the_openai_stream(gateway: RunningGateway, nursery: trio.Nursery) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    with trio.fail_after(30):
        async with admin_client(gateway) as admin:
            await use_fake_openai(admin, base)
        fake.scripts.append(Script(texts=[f"w{i} " for i in range(1000)], pause=0.02))
        async with client(gateway) as c:
            await c.send_message("a long answer please")
            await until(c, "text_delta")
            await c.abort()
            frames = await until(c, "abort_ok")
            assert frames[-1]["killed"] == 0
            with trio.fail_after(5):
                await fake.disconnected.wait()  # the endpoint saw the gateway hang up mid-stream
        assert len(fake.requests) == 1


def test_merge_patch_follows_rfc_7396() -> None:
    from gateway.agent.live_config import merge_patch, models_of

    doc = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(doc, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch(doc, {"c": ["x"]}) == {"a": "b", "c": ["x"]}
    assert merge_patch({"a": [1]}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert merge_patch(doc, {}) == doc and doc == {"a": "b", "c": {"d": "e", "f": "g"}}  # the input is not changed
    listed = {"providers": {"openai": {"models": ["a", {"id": "b"}, "a", 3, {"name": "no id"}, ""]}}}
    assert models_of(listed, "openai") == ["a", "b"]
    assert models_of(listed, "echo") == [] and models_of({"providers": []}, "openai") == []
