"""Cron that fits, over a real server: PATCH a job, timezones per job, impossible schedules, the run history."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import trio

from gateway.core import started
from tests.conftest import RunningGateway
from tests.gateway.rest import admin_client, error_of, register


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


async def _runs(client: httpx.AsyncClient, job_id: str, **params: Any) -> dict[str, Any]:
    r = await client.get(f"/api/cron/{job_id}/runs", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _ended(client: httpx.AsyncClient, job_id: str, count: int) -> list[dict[str, Any]]:
    """The job's runs once `count` have been stored and none is still running (waits on the stored rows)."""
    while True:
        runs: list[dict[str, Any]] = (await _runs(client, job_id))["runs"]
        if len(runs) >= count and all(r["status"] != "running" for r in runs):
            return runs
        await trio.sleep(0.02)


async def test_patch_changes_only_what_it_is_given(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        root = await register(gateway, "root")
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        sid = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
        made = await bob.client.post(
            "/api/cron/create", json={"name": "daily", "cron": "0 9 * * *", "session_id": sid, "prompt": "report"}
        )
        assert made.status_code == 201, made.text
        job = made.json()
        assert job["timezone"] == "UTC" and job["next_fire_local"].endswith("T09:00:00+00:00")

        renamed = await bob.client.patch(f"/api/cron/{job['id']}", json={"name": "morning"})
        assert renamed.status_code == 200, renamed.text
        after = renamed.json()
        assert after["name"] == "morning"
        unchanged = ("cron", "interval_seconds", "timezone", "prompt", "session_id", "enabled", "next_fire_at")
        assert {k: after[k] for k in unchanged} == {k: job[k] for k in unchanged}
        assert [j["name"] for j in (await bob.client.get("/api/cron")).json()["jobs"]] == ["morning"]

        # A timezone: 09:00 is now read in New York, and the next slot is 09:00 there (EST or EDT).
        zoned = (await bob.client.patch(f"/api/cron/{job['id']}", json={"timezone": "America/New_York"})).json()
        assert zoned["timezone"] == "America/New_York" and zoned["cron"] == "0 9 * * *"
        local = datetime.fromisoformat(zoned["next_fire_local"])
        assert (local.hour, local.minute) == (9, 0)
        assert local == _at(zoned["next_fire_at"])
        assert local.utcoffset() == ZoneInfo("America/New_York").utcoffset(local.replace(tzinfo=None))
        assert timedelta(0) < _at(zoned["next_fire_at"]) - datetime.now(local.tzinfo) <= timedelta(days=1)

        # Switching to an interval clears the expression; the prompt and target change as given.
        sid2 = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
        every = await bob.client.patch(
            f"/api/cron/{job['id']}", json={"interval_seconds": 3600, "prompt": "hourly", "session_id": sid2}
        )
        assert every.status_code == 200, every.text
        body = every.json()
        assert (body["cron"], body["interval_seconds"], body["prompt"], body["session_id"]) == (
            None, 3600, "hourly", sid2,
        )  # fmt: skip
        # Disabling clears the next slot, enabling sets one again.
        off = (await bob.client.patch(f"/api/cron/{job['id']}", json={"enabled": False})).json()
        assert off["enabled"] is False and off["next_fire_at"] is None
        on = (await bob.client.patch(f"/api/cron/{job['id']}", json={"enabled": True, "cron": "*/5 * * * *"})).json()
        assert on["enabled"] is True and on["interval_seconds"] is None and _at(on["next_fire_at"]).minute % 5 == 0

        # Who may: the owner and an admin; another user is refused, an unknown job is 404.
        assert (await carol.client.patch(f"/api/cron/{job['id']}", json={"name": "mine"})).status_code == 403
        by_admin = await root.client.patch(f"/api/cron/{job['id']}", json={"name": "audited"})
        assert by_admin.status_code == 200 and by_admin.json()["name"] == "audited"
        async with admin_client(gateway) as owner:
            assert (await owner.patch(f"/api/cron/{job['id']}", json={"name": "owned"})).status_code == 200
        missing = await bob.client.patch("/api/cron/nope", json={"name": "x"})
        assert missing.status_code == 404 and error_of(missing)["code"] == "CRON_JOB_NOT_FOUND"
        # A target session must be one the caller may use.
        carols = (await carol.client.post("/api/sessions", json={})).json()["session_id"]
        assert (await bob.client.patch(f"/api/cron/{job['id']}", json={"session_id": carols})).status_code == 403
        assert (await bob.client.get("/api/cron")).json()["jobs"][0]["name"] == "owned"


async def test_impossible_schedules_are_422_on_create_and_patch(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        bob = await register(gateway, "bob")
        sid = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
        job = (
            await bob.client.post("/api/cron/create", json={"cron": "0 9 * * *", "session_id": sid, "prompt": "x"})
        ).json()
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"cron": "0 0 31 2 *"}, "cron", "never fires"),
            ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
            ({"cron": "every day"}, "cron", "not a 5-field cron expression"),
            ({"cron": "* * * * * *"}, "cron", "not a 5-field cron expression"),
            ({"timezone": "Mars/Olympus_Mons"}, "timezone", "not an IANA timezone"),
            ({"timezone": "../../etc/passwd"}, "timezone", "not an IANA timezone"),
            ({"cron": "0 9 * * *", "timezone": "Europe/Nowhere"}, "timezone", "not an IANA timezone"),
        ]
        for change, field, says in cases:
            created = await bob.client.post(
                "/api/cron/create", json={"cron": "0 9 * * *", "session_id": sid, "prompt": "x", **change}
            )
            patched = await bob.client.patch(f"/api/cron/{job['id']}", json=change)
            for r in (created, patched):
                assert r.status_code == 422, (change, r.text)
                err = error_of(r)
                assert err["code"] == "VALIDATION_ERROR" and err["details"][0]["loc"] == ["body", field], r.text
                assert says in err["message"], err
        for body in (
            {},  # nothing to change
            {"cron": "0 9 * * *", "interval_seconds": 60},
            {"cron": None},
            {"prompt": ""},
            {"interval_seconds": 0},
            {"owner": "someone"},
            {"timezone": ""},
        ):
            r = await bob.client.patch(f"/api/cron/{job['id']}", json=body)
            assert r.status_code == 422, (body, r.text)
            error_of(r)
        # None of it changed the job.
        (kept,) = (await bob.client.get("/api/cron")).json()["jobs"]
        assert {k: kept[k] for k in ("cron", "timezone", "next_fire_at")} == {
            k: job[k] for k in ("cron", "timezone", "next_fire_at")
        }
        # A timezone on create: the slots are computed there.
        zoned = await bob.client.post(
            "/api/cron/create",
            json={"cron": "30 5 * * *", "timezone": "Asia/Kolkata", "session_id": sid, "prompt": "x"},
        )
        assert zoned.status_code == 201, zoned.text
        assert zoned.json()["next_fire_local"].endswith("T05:30:00+05:30")
        assert _at(zoned.json()["next_fire_at"]).strftime("%H:%M") == "00:00"


async def test_runs_history_newest_first_and_paginated(gateway: RunningGateway) -> None:
    with trio.fail_after(60):
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        sid = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
        job = (
            await bob.client.post(
                "/api/cron/create", json={"name": "t", "interval_seconds": 3600, "session_id": sid, "prompt": "ping"}
            )
        ).json()
        assert (await _runs(bob.client, job["id"])) == {"runs": [], "next_before": None}
        for _ in range(2):
            fired = await bob.client.post("/api/cron/trigger", json={"job_id": job["id"]})
            assert fired.json()["status"] == "ok", fired.text
        # A scheduled slot: the scheduler's clock is moved past it (no waiting an hour), and the run is recorded.
        scheduler = started(gateway.runtime.services.scheduler, "the scheduler")
        scheduler.wall = lambda: time.time() + 3601
        scheduler.wake()
        runs = await _ended(bob.client, job["id"], 3)
        assert [(r["trigger"], r["status"]) for r in runs] == [("schedule", "ok"), ("manual", "ok"), ("manual", "ok")]
        assert runs[0]["id"] > runs[1]["id"] > runs[2]["id"]
        newest = runs[0]
        assert newest["slot_at"] == job["next_fire_at"] and newest["session_id"] == sid and newest["turn_id"]
        assert newest["error"] is None and newest["ended_at"] is not None
        # (Its start is on the moved clock; a manual run's start and end are both on the real one.)
        assert _at(runs[1]["ended_at"]) >= _at(runs[1]["started_at"]) and runs[1]["duration_ms"] >= 0
        # The turn it names is the job's prompt, answered (the echo provider).
        turns = (await bob.client.get(f"/api/sessions/{sid}/events")).json()["events"]
        assert any(e["turn_id"] == newest["turn_id"] and e["type"] == "result" for e in turns)

        page1 = await _runs(bob.client, job["id"], limit=2)
        assert [r["id"] for r in page1["runs"]] == [runs[0]["id"], runs[1]["id"]]
        assert page1["next_before"] == runs[1]["id"]
        page2 = await _runs(bob.client, job["id"], limit=2, before=page1["next_before"])
        assert [r["id"] for r in page2["runs"]] == [runs[2]["id"]] and page2["next_before"] is None

        # A run whose target is gone is an error with the reason.
        assert (await bob.client.delete(f"/api/sessions/{sid}")).status_code == 200
        failed = (await bob.client.post("/api/cron/trigger", json={"job_id": job["id"]})).json()
        assert failed["status"] == "failed"
        latest = (await _runs(bob.client, job["id"], limit=1))["runs"][0]
        assert latest["status"] == "error" and "no longer exists" in latest["error"] and latest["turn_id"] is None

        assert (await carol.client.get(f"/api/cron/{job['id']}/runs")).status_code == 403
        assert (await bob.client.get("/api/cron/nope/runs")).status_code == 404
        for bad in ({"limit": 0}, {"limit": 501}, {"before": "x"}, {"before": 0}):
            assert (await bob.client.get(f"/api/cron/{job['id']}/runs", params=bad)).status_code == 422, bad
