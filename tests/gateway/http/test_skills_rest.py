"""Skills v2 over a real gateway: install from a local folder (good and bad SKILL.md), policy, enable, delete, 410."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import RunningGateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import sse_turn, use_fake_openai
from tests.gateway.rest import admin_client, error_of, register

GOOD = """---
name: Release Notes
description: Writes release notes from a list of merged changes.
version: 1.2.0
---
Group the changes by area. See template.md for the layout.
"""


def skill_folder(root: Path, md: str = GOOD, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "SKILL.md").write_text(md)
    (root / "template.md").write_text("## Features\n")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


async def install(client: httpx.AsyncClient, folder: Path, **extra: object) -> httpx.Response:
    body = {"source_type": "local", "source_ref": str(folder), **extra}
    return await client.post("/api/v2/skills/install", json=body)


async def test_install_list_update_enable_delete_and_the_context_reaches_the_model(
    gateway: RunningGateway, nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    src = skill_folder(tmp_path / "notes")
    with trio.fail_after(60):
        async with admin_client(gateway) as admin:
            r = await admin.post("/api/v2/skills/install", json={"source_type": "local", "source_ref": str(src)})
            assert r.status_code == 200, r.text
            item = r.json()
            assert item["slug"] == "release-notes" and item["name"] == "Release Notes"
            assert item["version"] == "1.2.0" and item["enabled"] is True and item["runtime_type"] == "native"
            assert item["bundle_file_count"] == 2 and item["context_ref_count"] == 1 and item["risk"] == []
            assert item["created_at"].endswith("Z") and item["last_sync_at"] is None
            assert item["installed_by"] is None  # the gateway token is no user
            assert (gateway.runtime.paths.data_dir / "skills" / "release-notes" / "template.md").is_file()
            listed = (await admin.get("/api/v2/skills")).json()["skills"]
            assert [s["id"] for s in listed] == [item["id"]]

            # The enabled skill is given to the model as system context.
            await use_fake_openai(admin, base)
            user = await register(gateway, "writer")  # first user: super admin
            sid = (await user.client.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.append(Script(texts=["ok"]))
            await sse_turn(user.client, sid, "notes please")
            system = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "system"]
            assert any("# Skill: Release Notes" in c and "Group the changes by area" in c for c in system)

            # Same slug again: updated in place, id and enabled state kept.
            r = await admin.post(f"/api/v2/skills/{item['slug']}/enabled", json={"enabled": False})
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            (src / "SKILL.md").write_text(GOOD.replace("1.2.0", "1.3.0"))
            r = await admin.post("/api/v2/skills/install", json={"source_type": "local", "source_ref": str(src)})
            updated = r.json()
            assert updated["id"] == item["id"] and updated["version"] == "1.3.0" and updated["enabled"] is False
            fake.scripts.append(Script(texts=["ok"]))
            await sse_turn(user.client, sid, "again")
            assert not any("# Skill:" in m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "system")

            r = await admin.post("/api/v2/skills/nope/enabled", json={"enabled": True})
            assert r.status_code == 404 and error_of(r)["code"] == "SKILL_NOT_FOUND"
            assert (await admin.delete(f"/api/v2/skills/{item['id']}")).status_code == 200
            assert not (gateway.runtime.paths.data_dir / "skills" / "release-notes").exists()
            r = await admin.delete(f"/api/v2/skills/{item['id']}")
            assert r.status_code == 404 and error_of(r)["code"] == "SKILL_NOT_FOUND"
            assert (await admin.get("/api/v2/skills")).json() == {"skills": []}
            await user.client.aclose()


async def test_bad_skills_are_refused_with_the_field_named(gateway: RunningGateway, tmp_path: Path) -> None:
    no_description = "---\nname: Half\n---\nbody\n"
    not_yaml = "---\nname: [unclosed\n---\nbody\n"
    no_frontmatter = "just text\n"
    with trio.fail_after(30):
        async with admin_client(gateway) as admin:
            r = await install(admin, skill_folder(tmp_path / "a", no_description))
            err = error_of(r)
            assert r.status_code == 422 and err["code"] == "SKILL_INVALID"
            assert [d["loc"] for d in err["details"]] == [["SKILL.md", "frontmatter", "description"]]
            for name, md, needle in [("b", not_yaml, "not valid YAML"), ("c", no_frontmatter, "frontmatter")]:
                r = await install(admin, skill_folder(tmp_path / name, md))
                assert r.status_code == 422 and needle in error_of(r)["message"], r.text
            # skill_md given in the request takes priority over the bundle's.
            r = await install(admin, skill_folder(tmp_path / "d", no_frontmatter), skill_md=GOOD)
            assert r.status_code == 200 and r.json()["slug"] == "release-notes"
            for body, loc in [
                ({"source_type": "ftp", "source_ref": "/x"}, ["body", "source_type"]),
                ({"source_type": "local"}, ["body"]),
                ({"source_type": "local", "source_ref": ""}, ["body", "source_ref"]),
            ]:
                r = await admin.post("/api/v2/skills/install", json=body)
                assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == loc, r.text
            for ref, needle in [("relative/path", "absolute"), (str(tmp_path / "missing"), "not a folder")]:
                r = await admin.post("/api/v2/skills/install", json={"source_type": "local", "source_ref": ref})
                assert r.status_code == 422 and needle in error_of(r)["message"]
            r = await admin.post("/api/v2/skills/install", json={"source_type": "github", "source_ref": "https://x/y"})
            assert r.status_code == 422 and "github.com" in error_of(r)["message"]
            assert [s["slug"] for s in (await admin.get("/api/v2/skills")).json()["skills"]] == ["release-notes"]


async def test_the_risk_policy_and_admin_only_and_the_legacy_api_is_gone(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    risky = skill_folder(tmp_path / "risky", GOOD.replace("Release Notes", "Deployer"), **{"deploy.sh": "echo hi\n"})
    body = {"source_type": "local", "source_ref": str(risky)}
    with trio.fail_after(30):
        async with admin_client(gateway) as admin, httpx.AsyncClient(base_url=gateway.base_url) as anon:
            assert (await admin.get("/api/v2/skills/policy")).json() == {"mode": "off"}
            assert (await admin.post("/api/v2/skills/policy", json={"mode": "enforce_confirmation"})).json() == {
                "status": "ok"
            }
            assert (await admin.get("/api/v2/skills/policy")).json() == {"mode": "enforce_confirmation"}
            r = await admin.post("/api/v2/skills/policy", json={"mode": "yolo"})
            assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body", "mode"]
            r = await admin.post("/api/v2/skills/install", json=body)
            err = error_of(r)
            assert r.status_code == 409 and err["code"] == "SKILL_RISK_CONFIRMATION_REQUIRED"
            assert "deploy.sh" in err["details"][0]
            r = await admin.post("/api/v2/skills/install", json={**body, "confirm_risk": True})
            assert r.status_code == 200 and "deploy.sh" in r.json()["risk"][0]

            assert (await anon.get("/api/v2/skills")).status_code == 401
            await register(gateway, "root")
            plain = await register(gateway, "pleb")
            for method, path in [("GET", "/api/v2/skills"), ("POST", "/api/v2/skills/install"),
                                 ("GET", "/api/v2/skills/policy"), ("DELETE", "/api/v2/skills/deployer")]:  # fmt: skip
                r = await plain.client.request(method, path, json=body if method == "POST" else None)
                assert r.status_code == 403, (method, path)
            for method, path in [("GET", "/api/app-config/skills"), ("POST", "/api/app-config/skills/install"),
                                 ("DELETE", "/api/app-config/skills/a/b/c")]:  # fmt: skip
                r = await plain.client.request(method, path)
                assert r.status_code == 410 and error_of(r)["code"] == "SKILLS_V1_GONE", (method, path)
                assert "/api/v2/skills" in error_of(r)["message"]
            await plain.client.aclose()
