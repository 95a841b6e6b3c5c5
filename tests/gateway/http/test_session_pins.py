"""Per-session provider and model over a real gateway: pinned over REST, used by the turn, reported in auth_ok."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import of_type, sse_turn, use_fake_openai
from tests.gateway.rest import admin_client, error_of, register
from tests.gateway.wshelpers import client, deltas, until


async def _gateway_with_fake(nursery: trio.Nursery, tmp_path: Path) -> tuple[RunningGateway, FakeOpenAI]:
    """`echo` stays the default; `openai` talks to a loopback fake, for the sessions that pin it."""
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    config, paths = make_config(tmp_path, providers={"openai": {"base_url": base, "model": "fake-default"}})
    return await start_gateway(nursery, config, paths), fake


def _pins(view: dict[str, Any]) -> tuple[Any, ...]:
    return view["provider"], view["model"], view["effective_provider"], view["effective_model"]


async def test_a_pinned_chat_runs_on_its_provider_while_another_stays_on_the_default(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        gw, fake = await _gateway_with_fake(nursery, tmp_path)
        async with admin_client(gw) as admin:
            body = {"channel": "api", "chat_id": "501", "provider": "openai", "model": "pinned-model"}
            r = await admin.post("/api/sessions", json=body)
            assert r.status_code == 201, r.text
            assert _pins(r.json()) == ("openai", "pinned-model", "openai", "pinned-model")
            listed = {s["key"]: s for s in (await admin.get("/api/sessions")).json()["sessions"]}
            assert _pins(listed["api:501"]) == ("openai", "pinned-model", "openai", "pinned-model")

            # Two turns back to back: the second is queued behind the first and still goes to the pin.
            fake.scripts.extend([Script(texts=["from ", "openai"], pause=0.05), Script(texts=["again"])])
            async with client(gw, chat_id=501) as c:
                assert c.auth_ok["active_provider"] == "openai" and c.auth_ok["active_model"] == "pinned-model"
                assert c.auth_ok["default_provider"] == "echo" and c.auth_ok["default_model"] == "echo"
                assert {p["name"] for p in c.auth_ok["providers"]} == {"echo", "openai"}
                await c.send_message("first")
                await c.send_message("second")
                first = await until(c, "result")
                second = await until(c, "result")
            assert deltas(first) == "from openai" and second[-1]["text"] == "again"
            assert [q["model"] for q in fake.requests] == ["pinned-model", "pinned-model"]
            assert fake.requests[-1]["messages"][-1] == {"role": "user", "content": "second"}

            async with client(gw, chat_id=502) as c:
                assert c.auth_ok["active_provider"] == "echo" and c.auth_ok["active_model"] == "echo"
                assert c.auth_ok["default_provider"] == "echo"
                await c.send_message("plain words")
                assert (await until(c, "result"))[-1]["text"] == "plain words"
            assert len(fake.requests) == 2  # the other chat never reached the fake
            other = (await admin.get("/api/sessions/api:502")).json()
            assert _pins(other) == (None, None, "echo", "echo")

            # null clears back to the default; the session's live actor reads it at its next turn.
            r = await admin.put("/api/chat/sessions/api:501", json={"provider": None, "model": None})
            assert r.status_code == 200, r.text
            assert _pins(r.json()) == (None, None, "echo", "echo")
            async with client(gw, chat_id=501) as c:
                assert c.auth_ok["active_provider"] == "echo" and c.auth_ok["active_model"] == "echo"
                await c.send_message("back home")
                assert (await until(c, "result"))[-1]["text"] == "back home"
            assert len(fake.requests) == 2
        await gw.stop()


async def test_a_new_chat_pinned_after_it_connected_runs_its_first_turn_on_the_pin(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The connection creates the session; a new session's first turn skips the read of its pin while nothing was
    # written since. The pin set here in between is such a write.
    with trio.fail_after(60):
        gw, fake = await _gateway_with_fake(nursery, tmp_path)
        async with admin_client(gw) as admin, client(gw, chat_id=503) as c:
            assert c.auth_ok["active_provider"] == "echo"
            r = await admin.put("/api/chat/sessions/api:503", json={"provider": "openai", "model": "late-pin"})
            assert r.status_code == 200, r.text
            fake.scripts.append(Script(texts=["pinned ", "reply"]))
            await c.send_message("first words")
            assert deltas(await until(c, "result")) == "pinned reply"
            assert [q["model"] for q in fake.requests] == ["late-pin"]
        await gw.stop()


async def test_pins_validation_ownership_and_the_default_moving_under_them(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        gw, fake = await _gateway_with_fake(nursery, tmp_path)
        bob = await register(gw, "bob")
        carol = await register(gw, "carol")
        sid = (await bob.client.post("/api/sessions", json={"title": "Bob's"})).json()["session_id"]
        path = f"/api/chat/sessions/{sid}"
        for bad in ({"provider": "nope"}, {"model": ""}, {"model": "m" * 201}, {"provider": 3}):
            r = await bob.client.put(path, json=bad)
            assert r.status_code == 422, bad
            assert error_of(r)["code"] == "VALIDATION_ERROR"
        r = await bob.client.post("/api/sessions", json={"provider": "nope"})
        assert r.status_code == 422 and "echo" in error_of(r)["message"]
        r = await carol.client.put(path, json={"provider": "openai"})
        assert r.status_code == 403 and error_of(r)["code"] == "SESSION_FORBIDDEN"
        assert _pins((await bob.client.get(f"/api/sessions/{sid}")).json()) == (None, None, "echo", "echo")

        # A model alone applies to the default provider; a title alone keeps the pin.
        r = await bob.client.put(path, json={"model": "m-200" + "x" * 195})
        assert r.status_code == 200 and r.json()["effective_provider"] == "echo"
        r = await bob.client.put(path, json={"provider": "openai", "model": "bob-model"})
        assert _pins(r.json()) == ("openai", "bob-model", "openai", "bob-model")
        r = await bob.client.put(path, json={"title": "Renamed"})
        assert r.json()["title"] == "Renamed" and r.json()["provider"] == "openai"
        fake.scripts.append(Script(texts=["pinned over sse"]))
        events = await sse_turn(bob.client, sid, "hello")
        assert of_type(events, "result")[0]["text"] == "pinned over sse"
        assert fake.requests[-1]["model"] == "bob-model"
        # The provider alone, model cleared: that provider's own default model.
        r = await bob.client.put(path, json={"model": None})
        assert _pins(r.json()) == ("openai", None, "openai", "fake-default")

        async with admin_client(gw) as admin:
            # An admin may pin anyone's session: this one to echo, explicitly.
            r = await admin.put(path, json={"provider": "echo"})
            assert r.status_code == 200 and _pins(r.json()) == ("echo", None, "echo", "echo")
            # The default moves to openai: the unpinned session follows it at once, the pinned one does not.
            await use_fake_openai(admin, fake.base_url)
            loose = (await bob.client.post("/api/sessions", json={})).json()
            assert _pins(loose) == (None, None, "openai", "fake-gpt")
            asked = len(fake.requests)
            fake.scripts.append(Script(texts=["default now"]))
            assert of_type(await sse_turn(bob.client, loose["session_id"], "hi"), "result")[0]["text"] == "default now"
            assert fake.requests[-1]["model"] == "fake-gpt"
            assert of_type(await sse_turn(bob.client, sid, "still echo"), "result")[0]["text"] == "still echo"
            assert len(fake.requests) == asked + 1
            async with client(gw, chat_id=9) as c:
                assert c.auth_ok["active_provider"] == "openai" and c.auth_ok["default_model"] == "fake-gpt"
        await bob.client.aclose()
        await carol.client.aclose()
        await gw.stop()
