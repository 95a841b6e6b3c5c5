"""Token usage over a real gateway: taken from the provider's report (the fake OpenAI), estimated for echo, summed
over REST per day, model, session and user, each account seeing its own; the daily cap refusing a turn with a 429."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import of_type, sse_turn
from tests.gateway.rest import admin_client, error_of, register


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


async def _agent(client: httpx.AsyncClient, message: str, session: str = "default") -> dict[str, Any]:
    r = await client.post("/api/agent", json={"message": message, "session": session, "timeout": 30})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _gateway(nursery: trio.Nursery, tmp_path: Path, **sections: dict[str, Any]) -> tuple[RunningGateway, str]:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    sections.setdefault("providers", {})["openai"] = {"base_url": base, "model": "fake-gpt"}
    config, paths = make_config(tmp_path, **sections)
    gw = await start_gateway(nursery, config, paths)
    gw.fake = fake  # type: ignore[attr-defined]
    return gw, base


async def test_usage_reported_streamed_and_whole_and_summed_per_model(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(60):
        gw, _ = await _gateway(nursery, tmp_path, agent={"provider": "openai"})
        fake: FakeOpenAI = gw.fake  # type: ignore[attr-defined]
        try:
            async with admin_client(gw) as admin:
                fake.scripts.append(Script(texts=["Hel", "lo"], usage=(21, 5)))
                got = await _agent(admin, "hi")
                assert got["reply"] == "Hello"
                assert got["usage"] == {
                    "input_tokens": 21,
                    "output_tokens": 5,
                    "total_tokens": 26,
                    "estimated": False,
                    "model": "fake-gpt",
                }
                assert fake.requests[-1]["stream_options"] == {"include_usage": True}
                # An endpoint answering one JSON object (no stream) reports its usage there.
                fake.scripts.append(Script(texts=["whole"], usage=(30, 2), whole=True))
                assert (await _agent(admin, "again"))["usage"]["input_tokens"] == 30
                # The OpenAI-compatible edge answers with the same counts.
                fake.scripts.append(Script(texts=["compat"], usage=(8, 1)))
                body = {"model": "any", "messages": [{"role": "user", "content": "x"}]}
                r = await admin.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                assert r.json()["usage"] == {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
                r = await admin.get("/api/usage", params={"group": "model"})
                assert r.status_code == 200, r.text
                view = r.json()
                assert view["rows"] == [
                    {
                        "key": "fake-gpt",
                        "turns": 3,
                        "input_tokens": 59,
                        "output_tokens": 8,
                        "total_tokens": 67,
                        "estimated_turns": 0,
                    }
                ]
                assert view["total"]["total_tokens"] == 67 and view["user"] is None and view["today"] is None
        finally:
            await gw.stop()


async def test_echo_is_estimated_and_each_account_sees_its_own(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(60):
        gw, _ = await _gateway(nursery, tmp_path)
        try:
            admin_acct = await register(gw, "root")  # the first account: an admin
            ann = await register(gw, "ann")
            bob = await register(gw, "bob")
            async with ann.client, bob.client, admin_acct.client:
                prompt = "count me in please"  # 18 characters: 5 tokens, and 4 of framing
                got = await _agent(ann.client, prompt)
                assert got["usage"] == {
                    "input_tokens": 9,
                    "output_tokens": 5,
                    "total_tokens": 14,
                    "estimated": True,
                    "model": "echo",
                }
                # The turn's end event carries it too, where SSE clients see it.
                made = await bob.client.post("/api/sessions", json={})
                assert made.status_code == 201, made.text
                bob_sid = made.json()["session_id"]
                events = await sse_turn(bob.client, bob_sid, "hello there bob")
                ended = of_type(events, "turn_ended")[-1]
                assert ended["usage"]["estimated"] is True and ended["usage"]["output_tokens"] == 4
                assert of_type(events, "result")[-1]["usage"] == ended["usage"]

                mine = (await ann.client.get("/api/usage")).json()
                assert [(r["key"], r["turns"], r["total_tokens"], r["estimated_turns"]) for r in mine["rows"]] == [
                    (_today(), 1, 14, 1)
                ]
                assert mine["user"] == ann.id and mine["today"]["used"] == 14 and mine["today"]["cap"] is None
                by_session = (await bob.client.get("/api/usage", params={"group": "session"})).json()
                assert [r["key"] for r in by_session["rows"]] == [bob_sid]
                # Each session named by its key while it has no title, by its title once it has one.
                assert by_session["rows"][0]["label"] == made.json()["key"]
                assert (
                    await bob.client.put(f"/api/chat/sessions/{bob_sid}", json={"title": "Bob's"})
                ).status_code == 200
                by_session = (await bob.client.get("/api/usage", params={"group": "session"})).json()
                assert by_session["rows"][0]["label"] == "Bob's" and "label" not in by_session["total"]
                assert all("label" not in r for r in mine["rows"]), "only session rows are labelled"
                assert (await bob.client.delete(f"/api/sessions/{bob_sid}")).status_code == 200
                gone = (await bob.client.get("/api/usage", params={"group": "session"})).json()["rows"]
                assert [(r["key"], r["label"], r["turns"]) for r in gone] == [(bob_sid, None, 1)], "usage outlives it"
                r = await bob.client.get("/api/usage", params={"user": ann.id})
                assert r.status_code == 403 and error_of(r)["code"] == "FORBIDDEN"
                everyone = (await admin_acct.client.get("/api/usage", params={"group": "user"})).json()
                assert {r["key"] for r in everyone["rows"]} == {ann.id, bob.id}
                one = (await admin_acct.client.get("/api/usage", params={"user": ann.id})).json()
                assert one["total"]["total_tokens"] == 14
                later = {"from": "2099-01-01", "to": "2099-01-02"}
                assert (await ann.client.get("/api/usage", params=later)).json()["total"]["turns"] == 0
                today = {"from": _today(), "to": _today()}
                assert (await ann.client.get("/api/usage", params=today)).json()["total"]["turns"] == 1
                for bad in ({"from": "2026-13-01"}, {"from": "yesterday"}, {"group": "week"}):
                    r = await ann.client.get("/api/usage", params=bad)
                    assert r.status_code == 422, (bad, r.text)
                r = await ann.client.get("/api/usage", params={"from": "2026-02-02", "to": "2026-02-01"})
                assert r.status_code == 422
        finally:
            await gw.stop()


async def test_a_daily_cap_refuses_the_next_turn_over_rest_and_stores_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        gw, _ = await _gateway(nursery, tmp_path, usage={"daily_token_cap": 1_000_000})
        try:
            root = await register(gw, "root")
            ann = await register(gw, "ann")
            async with ann.client, root.client, admin_client(gw) as owner:
                first = await _agent(ann.client, "one two three four")
                used = first["usage"]["total_tokens"]
                caps = (await root.client.get("/api/admin/usage-caps")).json()
                assert caps == {"caps": {}, "default": 1_000_000, "unowned": None}
                r = await ann.client.put(f"/api/admin/users/{ann.id}/usage-cap", json={"daily_tokens": used})
                assert r.status_code == 403  # a plain user sets no caps
                r = await root.client.put(f"/api/admin/users/{ann.id}/usage-cap", json={"daily_tokens": 0})
                assert r.status_code == 422
                r = await root.client.put("/api/admin/users/nobody/usage-cap", json={"daily_tokens": 5})
                assert r.status_code == 404
                r = await root.client.put(f"/api/admin/users/{ann.id}/usage-cap", json={"daily_tokens": used})
                assert r.status_code == 200, r.text
                assert r.json() == {"user_id": ann.id, "daily_tokens": used, "effective": used}
                # An admin account's cap is the owner's to set.
                r = await root.client.put(f"/api/admin/users/{root.id}/usage-cap", json={"daily_tokens": 5})
                assert r.status_code == 200
                sid = first["session_id"]
                before = (await ann.client.get(f"/api/sessions/{sid}/events")).json()["last_seq"]

                r = await ann.client.post("/api/agent", json={"message": "five six", "session": "default"})
                assert r.status_code == 429, r.text
                err = error_of(r)
                assert err["code"] == "USAGE_CAP_REACHED" and err["details"]["cap"] == used
                assert err["details"]["used"] == used and err["details"]["resets_at"].endswith("T00:00:00Z")
                assert 0 < int(r.headers["retry-after"]) <= 86400
                # The SSE chat is refused before its stream starts, the same way.
                async with ann.client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "x"}) as s:
                    await s.aread()
                    assert s.status_code == 429 and error_of(s)["code"] == "USAGE_CAP_REACHED"
                # Nothing of the refused turns was stored: no event, no message in the history.
                assert (await ann.client.get(f"/api/sessions/{sid}/events")).json()["last_seq"] == before
                listed = {s["session_id"]: s for s in (await ann.client.get("/api/sessions")).json()["sessions"]}
                assert listed[sid]["latest_message"] != "five six"
                # A cron run of a capped owner fails to start, with the reason.
                job = await ann.client.post(
                    "/api/cron/create", json={"interval_seconds": 3600, "session_id": sid, "prompt": "digest"}
                )
                assert job.status_code == 201, job.text
                fired = await ann.client.post("/api/cron/trigger", json={"job_id": job.json()["id"]})
                assert fired.status_code == 200, fired.text
                assert fired.json()["status"] == "failed" and "daily token cap" in fired.json()["message"]
                view = (await ann.client.get("/api/usage")).json()
                assert view["today"] == {"used": used, "cap": used, "resets_at": view["today"]["resets_at"]}

                # Lifted: back to the default (a million), and the turn goes through.
                r = await owner.put(f"/api/admin/users/{ann.id}/usage-cap", json={"daily_tokens": None})
                assert r.json()["effective"] == 1_000_000
                assert (await _agent(ann.client, "five six"))["reply"] == "five six"
                caps = (await owner.get("/api/admin/usage-caps")).json()
                assert caps["caps"] == {root.id: 5}
        finally:
            await gw.stop()
