"""Powers that reach the host are the owner's (the gateway token): a real admin account gets 403 OWNER_ONLY."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.connectors.helpers import wait_for
from tests.gateway.rest import User, admin_client, error_of, register

SKILL = "---\nname: Notes\ndescription: writes notes\n---\nBe terse.\n"


async def _admin_account(gw: RunningGateway) -> User:
    """A real super_admin account, made by the owner and logged in over the API."""
    admin = await register(gw, "boss", role="super_admin")
    me = await admin.client.get("/api/auth/me")
    assert me.json()["role"] == "super_admin"
    return admin


def _owner_only(r: httpx.Response) -> str:
    assert r.status_code == 403, r.text
    err = error_of(r)
    assert err["code"] == "OWNER_ONLY" and "gateway token" in err["message"]
    return str(err["message"])


async def test_a_stdio_mcp_server_is_the_owners(gateway: RunningGateway, tmp_path: Path) -> None:
    # The attack of issue 14: an admin account registers a "server" whose command touches a file on the host.
    proof = tmp_path / "touched-by-an-admin"
    attack = {"mcpServers": {"evil": {"transport": "stdio", "command": "touch", "args": [str(proof)]}}}
    with trio.fail_after(60):
        admin = await _admin_account(gateway)
        assert "runs a command on the host" in _owner_only(await admin.client.post("/api/app-config/mcp-servers",
                                                                                   json=attack))  # fmt: skip
        # Mixed with a harmless server in one request: nothing of it is stored.
        attack["mcpServers"]["web"] = {"transport": "streamable_http", "url": "http://mcp.invalid/mcp"}
        _owner_only(await admin.client.post("/api/app-config/mcp-servers", json=attack))
        assert (await admin.client.get("/api/app-config/mcp-servers")).json() == {"mcp_servers": []}
        # Every other MCP power stays with the admin account: a remote server, enabling, deleting.
        web = {"mcpServers": {"web": attack["mcpServers"]["web"]}}
        assert (await admin.client.post("/api/app-config/mcp-servers", json=web)).status_code == 200
        r = await admin.client.post("/api/app-config/mcp-servers/web/enabled", json={"enabled": False})
        assert r.status_code == 200
        assert (await admin.client.post("/api/app-config/mcp-servers/web/delete")).status_code == 200
        assert not proof.exists()
        # The owner may: the command really runs on the host.
        async with admin_client(gateway) as owner:
            del attack["mcpServers"]["web"]
            assert (await owner.post("/api/app-config/mcp-servers", json=attack)).status_code == 200

        async def touched() -> bool:
            return proof.exists()

        await wait_for(touched)
        await admin.client.aclose()


async def test_skills_from_a_local_path_are_the_owners(gateway: RunningGateway, tmp_path: Path) -> None:
    src = tmp_path / "skill"
    src.mkdir()
    (src / "SKILL.md").write_text(SKILL)
    body = {"source_type": "local", "source_ref": str(src)}
    with trio.fail_after(60):
        admin = await _admin_account(gateway)
        assert "local folder" in _owner_only(await admin.client.post("/api/v2/skills/install", json=body))
        assert (await admin.client.get("/api/v2/skills")).json() == {"skills": []}
        # The rest of the skills API stays the admin account's.
        assert (await admin.client.post("/api/v2/skills/policy", json={"mode": "off"})).status_code == 200
        async with admin_client(gateway) as owner:
            r = await owner.post("/api/v2/skills/install", json=body)
            assert r.status_code == 200, r.text
        r = await admin.client.post("/api/v2/skills/notes/enabled", json={"enabled": False})
        assert r.status_code == 200
        assert (await admin.client.delete("/api/v2/skills/notes")).status_code == 200
        await admin.client.aclose()


async def test_connectors_files_and_secrets_are_the_owners(nursery: trio.Nursery, tmp_path: Path) -> None:
    # file_access = all: GET /files could read any path of the host.
    gw = await start_gateway(nursery, *make_config(tmp_path, server={"file_access": "all"}))
    secret_file = tmp_path / "private.txt"
    secret_file.write_text("only the owner reads this")
    sidecar = {
        "shared_token": {"value": "shared-token-owner-only-0001"},
        "mode": "sidecar",
        "base_url": "http://127.0.0.1:9",
        "child_process": {"command": [sys.executable, "-c", f"open({str(tmp_path / 'ran')!r}, 'w')"]},
    }
    with trio.fail_after(60):
        admin = await _admin_account(gw)
        plain = await register(gw, "pleb", role="user")
        for client in (admin.client, plain.client):
            _owner_only(await client.put("/v1/runtime/connectors/external/side", json=sidecar))
            _owner_only(await client.get("/v1/runtime/connectors"))
            _owner_only(await client.put("/v1/runtime/secrets/x/y", json={"value": "abcdefgh"}))
            _owner_only(await client.get("/files", params={"path": str(secret_file)}))
        assert not (tmp_path / "ran").exists()
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            r = await anon.get("/files", params={"path": str(secret_file)}, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401 and "gateway token" in error_of(r)["message"]
        async with admin_client(gw) as owner:
            r = await owner.get("/files", params={"path": str(secret_file)})
            assert r.status_code == 200 and r.text == "only the owner reads this"
        # /api/transcribe names a file too: an account only inside the workspace, whatever file_access says.
        r = await admin.client.post("/api/transcribe", json={"file_path": str(secret_file)})
        assert "outside the workspace" in _owner_only(r)
        await admin.client.aclose()
        await plain.client.aclose()
    await gw.stop()


async def test_no_api_sets_the_cli_command_or_file_access(gateway: RunningGateway) -> None:
    # The `cli` provider's command and env and `server.file_access` come from the config file only.
    with trio.fail_after(30):
        async with admin_client(gateway) as owner:
            for body in (
                {"provider": "cli", "command": ["touch", "/tmp/x"]},
                {"argv": ["sh", "-c", "id"]},
                {"env": {"LD_PRELOAD": "/tmp/x.so"}},
                {"file_access": "all"},
            ):
                r = await owner.post("/api/app-config/llm", json=body)
                assert r.status_code == 422, (body, r.text)
            r = await owner.post("/api/app-config/llm", json={"provider": "cli"})
            assert r.status_code == 422 and "unknown provider" in error_of(r)["message"]
            r = await owner.post("/api/app-config/agent", json={"file_access": "all"})
            assert r.status_code == 422
