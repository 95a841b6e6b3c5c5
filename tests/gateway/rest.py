"""Helpers for the REST tests: clients for the admin token and for users registered over the real API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import TOKEN, RunningGateway


def admin_client(gw: RunningGateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


@dataclass
class User:
    id: str
    access: str
    refresh: str
    client: httpx.AsyncClient


async def register(
    gw: RunningGateway, username: str, password: str = "correct horse battery", *, role: str | None = None
) -> User:
    """An account made by the owner over the API (self-registration is closed by default), then logged in.

    Without `role` the gateway's first account is a super_admin and later ones plain users, as the tests' stories go.
    """
    async with admin_client(gw) as owner:
        if role is None:
            role = "super_admin" if (await owner.get("/api/admin/users")).json()["total"] == 0 else "user"
        made = await owner.post("/api/admin/users", json={"username": username, "password": password, "role": role})
        assert made.status_code == 201, made.text
    return await login(gw, username, password)


async def login(gw: RunningGateway, username: str, password: str) -> User:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as anon:
        r = await anon.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    access = body["tokens"]["access_token"]
    client = httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {access}"}, timeout=30)
    return User(body["user"]["id"], access, body["tokens"]["refresh_token"], client)


def error_of(r: httpx.Response) -> dict[str, Any]:
    """The error object of a response, checking it has the one shape every error takes."""
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert isinstance(err["code"], str) and err["code"].isupper()
    assert isinstance(err["message"], str) and err["message"]
    return err


async def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse an SSE body into events: {"id", "event", "data"} (data JSON-decoded when it can be)."""
    import json

    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if current:
                events.append(current)
                current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        if field == "data":
            try:
                current["data"] = json.loads(value)
            except ValueError:
                current["data"] = value
        else:
            current[field] = value
    if current:
        events.append(current)
    return events
