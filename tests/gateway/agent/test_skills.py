"""Skills v2 install (local folder, GitHub tree URL through a loopback fake of its API) and A2A agent cards."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.messages import SessionKey
from actors.providers.base import TurnRequest
from actors.providers.openai import OpenAIProvider, OpenAISettings
from actors.store import Store
from gateway.agent import skills
from gateway.agent.a2a import fetch_card
from gateway.errors import A2ACardError, ConflictError, OwnerOnlyError, SkillInstallError
from gateway.outbound import OutboundPolicy
from storage import skills as skills_db
from tests.fakes.http_server import serve_app
from tests.fakes.openai_server import FakeOpenAI, Script

GOOD = """---
name: Release Notes
description: Writes release notes from a list of merged changes.
version: 1.2.0
---
Group the changes by area. See template.md for the layout.
"""


def make_skill(root: Path, md: str = GOOD, extra: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "SKILL.md").write_text(md)
    (root / "template.md").write_text("## Features\n")
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
    return root


async def test_local_install_update_in_place_and_catalog(store: Store, tmp_path: Path) -> None:
    src = make_skill(tmp_path / "src")
    dest = tmp_path / "skills"
    row, reasons = await skills.install(store=store, skills_dir=dest, source_type="local", source_ref=str(src))
    assert reasons == []
    assert (row.slug, row.name, row.version, row.enabled) == ("release-notes", "Release Notes", "1.2.0", True)
    assert row.bundle_file_count == 2 and row.context_ref_count == 1
    assert (dest / "release-notes" / "template.md").read_text() == "## Features\n"

    assert await store.call(skills_db.set_skill_enabled, row.id, False, now_ms=1)
    (src / "SKILL.md").write_text(GOOD.replace("1.2.0", "1.3.0"))
    again, _ = await skills.install(store=store, skills_dir=dest, source_type="local", source_ref=str(src))
    assert again.id == row.id and again.version == "1.3.0" and again.enabled is False

    catalog = skills.SkillCatalog()
    await catalog.refresh(store)
    assert catalog.contexts() == []
    await store.call(skills_db.set_skill_enabled, row.id, True, now_ms=2)
    await catalog.refresh(store)
    assert catalog.contexts()[0].startswith("# Skill: Release Notes")


@pytest.mark.parametrize(
    ("md", "message"),
    [
        ("no frontmatter here", "must start with YAML frontmatter"),
        ("---\nname: x\n", "not closed"),
        ("---\n: : [\n---\nbody", "not valid YAML"),
        ("---\n- a\n- b\n---\nbody", "must be a mapping"),
        ("---\ndescription: d\n---\nbody", "frontmatter is invalid"),
        ("---\nname: n\ndescription: d\nruntime: docker\n---\nbody", "frontmatter is invalid"),
    ],
)
async def test_bad_frontmatter_is_refused_and_nothing_is_installed(
    store: Store, tmp_path: Path, md: str, message: str
) -> None:
    src = make_skill(tmp_path / "bad", md)
    with pytest.raises(SkillInstallError, match=message):
        await skills.install(store=store, skills_dir=tmp_path / "skills", source_type="local", source_ref=str(src))
    assert await store.call(skills_db.list_skills) == []
    assert not (tmp_path / "skills").exists() or not any((tmp_path / "skills").iterdir())


def test_missing_fields_are_listed_in_details() -> None:
    with pytest.raises(SkillInstallError) as info:
        skills.parse_skill_md("---\nversion: 1\n---\nbody")
    assert {d["field"] for d in info.value.details} == {"name", "description"}


async def test_the_risk_policy_asks_for_confirmation_of_scripts(store: Store, tmp_path: Path) -> None:
    src = make_skill(tmp_path / "risky", extra={"run.sh": "rm -rf /\n"})
    await skills.set_policy(store, "enforce_confirmation")
    kwargs: dict[str, Any] = {
        "store": store,
        "skills_dir": tmp_path / "s",
        "source_type": "local",
        "source_ref": str(src),
    }
    with pytest.raises(ConflictError) as info:
        await skills.install(**kwargs)
    assert info.value.code == "SKILL_RISK_CONFIRMATION_REQUIRED"
    assert "run.sh" in info.value.details[0]
    row, reasons = await skills.install(**kwargs, confirm_risk=True)
    assert row.slug == "release-notes" and reasons
    await skills.set_policy(store, "off")
    assert await skills.get_policy(store) == "off"


async def test_symlinks_and_hidden_files_are_not_taken_and_limits_hold(store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    src = make_skill(tmp_path / "src")
    os.symlink(secret, src / "link.txt")
    (src / ".env").write_text("TOKEN=x")
    row, _ = await skills.install(store=store, skills_dir=tmp_path / "s", source_type="local", source_ref=str(src))
    assert sorted(p.name for p in (tmp_path / "s" / row.slug).iterdir()) == ["SKILL.md", "template.md"]
    many = make_skill(tmp_path / "many", extra={f"f{i}.md": "x" for i in range(skills.MAX_FILES)})
    with pytest.raises(SkillInstallError, match="more than"):
        await skills.install(store=store, skills_dir=tmp_path / "s", source_type="local", source_ref=str(many))
    with pytest.raises(SkillInstallError, match="absolute path"):
        await skills.install(store=store, skills_dir=tmp_path / "s", source_type="local", source_ref="rel/path")


def fake_github(files: dict[str, str]) -> Starlette:
    """GitHub's contents API for one repo: GET /repos/{o}/{r}/contents/{path}?ref= and raw downloads."""
    base: list[str] = []

    async def contents(request: Request) -> Response:
        path = request.path_params.get("path", "").strip("/")
        if request.query_params.get("ref") != "main":
            return JSONResponse({"message": "No commit found for the ref"}, status_code=404)
        entries: dict[str, dict[str, Any]] = {}
        for full, text in files.items():
            if path and not full.startswith(path + "/"):
                continue
            rest = full[len(path) + 1 :] if path else full
            head = rest.split("/", 1)[0]
            item_path = f"{path}/{head}" if path else head
            if "/" in rest:
                entries[head] = {"name": head, "path": item_path, "type": "dir", "download_url": None}
            else:
                entries[head] = {
                    "name": head,
                    "path": item_path,
                    "type": "file",
                    "size": len(text),
                    "download_url": f"{base[0]}/raw/{item_path}",
                }
        if not entries:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        return JSONResponse(list(entries.values()))

    async def raw(request: Request) -> Response:
        return Response(files[request.path_params["path"]])

    app = Starlette(
        routes=[
            Route("/repos/o/r/contents/{path:path}", contents),
            Route("/raw/{path:path}", raw),
        ]
    )
    app.state.base = base
    return app


async def test_install_from_a_github_tree_url(store: Store, tmp_path: Path, nursery: trio.Nursery) -> None:
    app = fake_github(
        {
            "skills/notes/SKILL.md": GOOD,
            "skills/notes/template.md": "## Features\n",
            "skills/notes/parts/extra.md": "more",
            "skills/other/SKILL.md": "unrelated",
        }
    )
    url = await serve_app(nursery, app)
    app.state.base.append(url)
    # The fake GitHub is on loopback: by default the outbound policy refuses it; the owner's allow-list lets it in.
    lan = OutboundPolicy([url.removeprefix("http://")])
    install = partial(skills.install, store=store, skills_dir=tmp_path / "s", source_type="github", github_api=url)
    notes = "https://github.com/o/r/tree/main/skills/notes"
    with trio.fail_after(20):
        with pytest.raises(SkillInstallError, match=r"outbound policy: 127\.0\.0\.1 is a loopback"):
            await install(source_ref=notes)
        row, _ = await install(source_ref=notes, outbound=lan)
        assert row.bundle_file_count == 3
        assert (tmp_path / "s" / "release-notes" / "parts" / "extra.md").read_text() == "more"
        with pytest.raises(SkillInstallError, match="GitHub has no"):
            await install(source_ref="https://github.com/o/r/tree/dev/skills/notes", outbound=lan)
    with pytest.raises(SkillInstallError, match="must look like"):
        await skills.install(
            store=store,
            skills_dir=tmp_path / "s",
            source_type="github",
            source_ref="https://example.com/x",
            github_api=url,
        )


async def test_an_admin_account_installs_text_only_skills_from_github(
    store: Store, tmp_path: Path, nursery: trio.Nursery
) -> None:
    # Not the owner (by_owner=False, as for an admin account): a skill with scripts would reach the host.
    app = fake_github({"a/SKILL.md": GOOD, "b/SKILL.md": GOOD.replace("Release Notes", "Setup"), "b/setup.sh": "x"})
    url = await serve_app(nursery, app)
    app.state.base.append(url)
    tree = "https://github.com/o/r/tree/main/"
    lan = OutboundPolicy([url.removeprefix("http://")])  # the fake GitHub is on loopback
    with trio.fail_after(20):
        row, risk = await skills.install(store=store, skills_dir=tmp_path / "s", source_type="github",
                                         source_ref=tree + "a", github_api=url, by_owner=False,
                                         outbound=lan)  # fmt: skip
        assert risk == [] and row.slug == "release-notes"
        with pytest.raises(OwnerOnlyError, match=r"contains scripts: setup\.sh"):
            await skills.install(store=store, skills_dir=tmp_path / "s", source_type="github",
                                 source_ref=tree + "b", github_api=url, by_owner=False, outbound=lan)  # fmt: skip
        assert not (tmp_path / "s" / "setup").exists()
        with pytest.raises(OwnerOnlyError, match="local folder"):
            await skills.install(store=store, skills_dir=tmp_path / "s", source_type="local",
                                 source_ref=str(make_skill(tmp_path / "src")), by_owner=False)  # fmt: skip
        _, risk = await skills.install(store=store, skills_dir=tmp_path / "s", source_type="github",
                                       source_ref=tree + "b", github_api=url, outbound=lan)  # fmt: skip
        assert risk and (tmp_path / "s" / "setup" / "setup.sh").exists()  # the owner may


async def test_enabled_skills_reach_the_model_as_system_context(nursery: trio.Nursery) -> None:
    fake = FakeOpenAI()
    await fake.start(nursery)
    fake.scripts.append(Script(texts=["ok"]))
    provider = OpenAIProvider(OpenAISettings(base_url=fake.base_url), context=lambda: ["# Skill: Notes\nbe terse"])
    req = TurnRequest(session_id="s", key=SessionKey("api", "1"), prompt="hi")
    with trio.fail_after(10):
        _ = [e async for e in provider.start_turn(req).events()]
    assert fake.requests[0]["messages"][0] == {"role": "system", "content": "# Skill: Notes\nbe terse"}


def fake_agent(card_path: str | None, body: Any = None) -> Starlette:
    async def card(request: Request) -> Response:
        if request.url.path != card_path:
            return JSONResponse({}, status_code=404)
        return JSONResponse(body) if not isinstance(body, str) else Response(body)

    return Starlette(routes=[Route("/.well-known/{name}", card)])


CARD = {
    "name": "Researcher",
    "description": "Finds things",
    "defaultInputModes": ["text/plain"],
    "defaultOutputModes": ["text/plain", "application/json"],
    "capabilities": {"streaming": True, "pushNotifications": False},
}


@pytest.mark.parametrize("path", ["/.well-known/agent-card.json", "/.well-known/agent.json"])
async def test_a2a_card_from_current_and_legacy_paths(nursery: trio.Nursery, path: str) -> None:
    url = await serve_app(nursery, fake_agent(path, CARD))
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            row = await fetch_card(url + "/", client=client)
    assert row.view() | {"id": "x"} == {
        "id": "x",
        "name": "Researcher",
        "description": "Finds things",
        "base_url": url,
        "input_modes": ["text/plain"],
        "output_modes": ["text/plain", "application/json"],
        "streaming": True,
        "push_notifications": False,
        "enabled": True,
    }


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (None, None, "no agent card"),
        ("/.well-known/agent-card.json", "not json", "is not JSON"),
        ("/.well-known/agent-card.json", ["a"], "JSON object"),
        ("/.well-known/agent-card.json", {"description": "nameless"}, "has no name"),
    ],
)
async def test_a2a_bad_cards_are_refused(nursery: trio.Nursery, path: str | None, body: Any, message: str) -> None:
    url = await serve_app(nursery, fake_agent(path, body))
    with trio.fail_after(10), pytest.raises(A2ACardError, match=message):
        async with httpx.AsyncClient() as client:
            await fetch_card(url, client=client)


async def test_a2a_unreachable_and_bad_urls() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(A2ACardError, match="cannot reach"):
            await fetch_card("http://127.0.0.1:9", client=client)
        with pytest.raises(A2ACardError, match="must start with"):
            await fetch_card("ftp://x", client=client)
