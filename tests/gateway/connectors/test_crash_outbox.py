"""Crash safety of the reply outbox: SIGKILL the gateway while deliveries are pending, restart, all get delivered."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import httpx
import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import TOKEN
from tests.gateway.connectors.helpers import fake_server, wait_for
from tests.gateway.crashkit import integrity, query, spawn

EVENTS = 45
KILLS = 3


@pytest.mark.slow
async def test_sigkill_with_pending_deliveries_resumes_and_delivers_each_at_least_once(tmp_path: Path) -> None:
    attempts: dict[str, int] = {}  # idempotency key -> attempts the receiver saw
    accepted: dict[str, str] = {}  # idempotency key -> text, deduplicated as a real receiver would

    async def reply(request: Request) -> Response:
        key = request.headers.get("idempotency-key", "")
        body = await request.json()
        assert key and key == body["delivery_id"]
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] == 1:
            # The first attempt of every delivery fails: there are always deliveries waiting for a retry.
            return JSONResponse({"error": "busy"}, status_code=503)
        accepted.setdefault(key, body["text"])
        return JSONResponse({"ok": True})

    data = tmp_path / "data"
    db = data / "gateway.db"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ntoken = "{TOKEN}"\n'
        f'[storage]\ndata_dir = "{data}"\n'
        "[outbox]\nbackoff = 0.1\nmax_backoff = 0.3\nmax_attempts = 50\n"
    )
    rng = random.Random(3)
    acked: dict[str, str] = {}  # ingress idempotency key -> session id
    kills = 0
    with trio.fail_after(100):
        async with fake_server([Route("/reply", reply, methods=["POST"])]) as receiver, trio.open_nursery() as nursery:
            gw = await spawn(config, nursery, tmp_path)
            async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as a:
                r = await a.put(
                    "/v1/runtime/connectors/http/hooks",
                    json={
                        "allow_unauthenticated_ingress": True,
                        "default_reply_targets": [
                            {"plugin": "http", "connector": "hooks", "address": f"{receiver}/reply"}
                        ],
                    },
                )
                assert r.status_code == 201, r.text
            waves = [
                list(range(w, min(w + EVENTS // (KILLS + 1), EVENTS))) for w in range(0, EVENTS, EVENTS // (KILLS + 1))
            ]
            retried_after_kill: set[str] = set()
            while True:
                wave = waves.pop(0) if waves else []
                async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
                    for i in list(wave):
                        # One session per event, so every event is its own turn and its own delivery.
                        body = {"binding_keys": [f"k{i}"], "content": f"msg {i}", "idempotency_key": f"i{i}"}
                        try:
                            r = await c.post("/v1/connectors/http/hooks", json=body)
                        except httpx.HTTPError:
                            waves.insert(0, wave[wave.index(i) :])  # maybe not acknowledged: again after restart
                            break
                        assert r.status_code == 202, r.text
                        assert acked.setdefault(f"i{i}", r.json()["session_id"]) == r.json()["session_id"]
                if kills < KILLS:
                    # Kill while a delivery failed once and waits for its retry (and more may be in flight).
                    def waiting() -> list[tuple[str]]:
                        return query(db, "SELECT delivery_id FROM outbox WHERE state = 'pending' AND attempts >= 1")

                    async def some_waiting() -> list[tuple[str]]:
                        return waiting()

                    await wait_for(some_waiting, timeout=30, interval=0.005)
                    await trio.sleep(rng.uniform(0, 0.02))
                    gw.process.send_signal(signal.SIGKILL)
                    kills += 1
                    await gw.process.wait()
                    retried_after_kill |= {row[0] for row in waiting()}
                    gw = await spawn(config, nursery, tmp_path)
                elif not waves:
                    break

            # After the last restart: every event is fed to the agent, every turn ends, and every completed turn's
            # delivery reaches the receiver.
            async def drained() -> bool:
                cursor = query(db, "SELECT last_id FROM ingress_cursor")[0][0]
                top = query(db, "SELECT max(id) FROM ingress_events")[0][0]
                busy = query(db, "SELECT count(*) FROM turns WHERE state IN ('queued', 'running')")[0][0]
                undelivered = query(
                    db,
                    "SELECT count(*) FROM turns t WHERE t.state = 'completed' AND NOT EXISTS "
                    "(SELECT 1 FROM outbox o WHERE o.turn_id = t.id AND o.state = 'delivered')",
                )[0][0]
                return bool(cursor == top and busy == 0 and undelivered == 0)

            await wait_for(drained, timeout=40, interval=0.1)
            gw.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                await gw.process.wait()
            nursery.cancel_scope.cancel()
    assert kills == KILLS
    assert integrity(db) == "ok"
    keys = [r[0] for r in query(db, "SELECT event_key FROM ingress_events WHERE connector = 'http/hooks'")]
    assert len(keys) == len(set(keys)) and set(keys) == set(acked)  # every acknowledged event, once
    outbox = dict(query(db, "SELECT delivery_id, text FROM outbox"))
    assert set(accepted) == set(outbox)  # at least once: each delivery reached the receiver
    assert all(accepted[k] == text for k, text in outbox.items())
    turns = query(db, "SELECT id, state, prompt FROM turns")
    # Every acknowledged event reached the agent (in a turn of its own session).
    fed = {part for _, _, prompt in turns for part in prompt.split("\n\n")}
    assert {f"msg {i}" for i in range(EVENTS)} <= fed
    # Exactly once: each event (its own session) in one turn, even when a kill fell between feeding the agent and
    # advancing the dispatcher's cursor. One delivery per completed turn; a turn the kill interrupted ends
    # `interrupted` and is not run again, so it has none.
    assert len(turns) == EVENTS
    per_turn = dict(query(db, "SELECT turn_id, count(*) FROM outbox GROUP BY turn_id"))
    completed = {t for t, state, _ in turns if state == "completed"}
    assert set(per_turn) == completed and set(per_turn.values()) == {1}
    interrupted = sum(1 for _, state, _ in turns if state == "interrupted")
    # The deliveries that were waiting when the process died were delivered by the next process.
    assert retried_after_kill and retried_after_kill <= set(accepted)
    print(
        f"{len(outbox)} deliveries for {EVENTS} events in {len(turns)} turns ({interrupted} interrupted by a kill); "
        f"{len(retried_after_kill)} deliveries pending at a kill were delivered after the restart"
    )
    states = dict(query(db, "SELECT state, count(*) FROM turns GROUP BY state"))
    assert "running" not in states, states
