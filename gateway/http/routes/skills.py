"""Skills v2 over REST: list, install (local folder or GitHub tree URL), enable, delete, risk policy; v1 is gone."""

from __future__ import annotations

import shutil
from typing import Annotated, Any, Literal

import msgspec
import trio

from gateway.agent import skills
from gateway.errors import GoneError, NotFoundError
from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.routes.account import iso
from gateway.http.routes.tool_servers import EnabledRequest
from storage import skills as skills_db
from storage.clock import now_ms
from storage.skills import SkillRow


class SkillItem(msgspec.Struct, kw_only=True):
    id: str
    slug: str
    name: str
    description: str
    version: str
    source_type: str
    source_ref: str
    runtime_type: str
    enabled: bool
    installed_by: str | None
    created_at: str
    updated_at: str
    bundle_file_count: int
    context_ref_count: int
    last_sync_at: str | None
    risk: list[str] = []  # on install: why the skill could act on the machine (empty when text only)


class SkillList(msgspec.Struct, kw_only=True):
    skills: list[SkillItem]


class InstallRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    source_type: Literal["local", "github"]
    source_ref: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    manifest: dict[str, Any] | None = None  # accepted for compatibility; SKILL.md's frontmatter is what counts
    skill_md: Annotated[str, msgspec.Meta(max_length=256 * 1024)] = ""
    confirm_risk: bool = False  # needed when the policy is enforce_confirmation and the skill has scripts


class Policy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mode: Literal["off", "enforce_confirmation"]


def skill_item(row: SkillRow, risk: list[str] | None = None) -> SkillItem:
    view = row.view()
    view["created_at"] = iso(row.created_at)
    view["updated_at"] = iso(row.updated_at)
    view["risk"] = risk or []
    return msgspec.convert(view, SkillItem)


async def _refresh(ctx: Ctx) -> None:
    # The provider reads the enabled skills' text at the start of every turn from this catalog.
    await ctx.runtime.skills.refresh(ctx.store)


@endpoint("GET", "/api/v2/skills", summary="Installed skills", tag="skills", auth="admin", response=SkillList)
async def list_skills(ctx: Ctx) -> SkillList:
    rows = await ctx.store.call(skills_db.list_skills)
    return SkillList(skills=[skill_item(r) for r in rows])


@endpoint(
    "POST",
    "/api/v2/skills/install",
    summary="Install or update a skill from a local folder or a GitHub tree URL (same slug: updated in place); "
    "a local folder or a skill with scripts needs the gateway token",
    tag="skills",
    auth="admin",
    body=InstallRequest,
    response=SkillItem,
    errors=(403, 409, 422),
)
async def install_skill(ctx: Ctx) -> SkillItem:
    req: InstallRequest = ctx.body
    row, risk = await skills.install(
        store=ctx.store,
        skills_dir=ctx.runtime.paths.data_dir / "skills",
        source_type=req.source_type,
        source_ref=req.source_ref,
        skill_md=req.skill_md,
        confirm_risk=req.confirm_risk,
        installed_by=ctx.user.user_id,
        outbound=ctx.runtime.outbound,
        by_owner=ctx.user.is_owner,
    )
    await _refresh(ctx)
    return skill_item(row, risk)


@endpoint(
    "GET", "/api/v2/skills/policy", summary="The skills' risk policy", tag="skills", auth="admin", response=Policy
)
async def get_policy(ctx: Ctx) -> Policy:
    return Policy(mode=await skills.get_policy(ctx.store))


@endpoint(
    "POST",
    "/api/v2/skills/policy",
    summary="Set the risk policy (enforce_confirmation: skills with scripts need confirm_risk)",
    tag="skills",
    auth="admin",
    body=Policy,
    response=Ok,
    errors=(422,),
)
async def set_policy(ctx: Ctx) -> Ok:
    req: Policy = ctx.body
    await skills.set_policy(ctx.store, req.mode)
    return Ok()


@endpoint(
    "POST",
    "/api/v2/skills/{skill_key}/enabled",
    summary="Enable or disable a skill (by id or slug)",
    tag="skills",
    auth="admin",
    body=EnabledRequest,
    response=Ok,
    errors=(404, 422),
)
async def enable_skill(ctx: Ctx) -> Ok:
    req: EnabledRequest = ctx.body
    key = ctx.path("skill_key")
    if not await ctx.store.call(skills_db.set_skill_enabled, key, req.enabled, now_ms=now_ms()):
        raise NotFoundError(f"no skill {key!r}", code="SKILL_NOT_FOUND")
    await _refresh(ctx)
    return Ok()


@endpoint(
    "DELETE",
    "/api/v2/skills/{skill_key}",
    summary="Delete a skill (by id or slug), its files and every user's preference about it",
    tag="skills",
    auth="admin",
    response=Ok,
    errors=(404,),
)
async def delete_skill(ctx: Ctx) -> Ok:
    key = ctx.path("skill_key")
    row = await ctx.store.call(skills_db.delete_skill, key)
    if row is None:
        raise NotFoundError(f"no skill {key!r}", code="SKILL_NOT_FOUND")
    root = ctx.runtime.paths.data_dir / "skills"
    folder = root / row.slug
    # The slug comes from slugify() (a-z, 0-9, '-'), so the folder is always a direct child of the root.
    if folder.parent == root:
        await trio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
    await _refresh(ctx)
    return Ok()


_GONE = "the v1 skills API is gone; use /api/v2/skills (list, install, enabled, delete, policy)"


async def legacy_skills(ctx: Ctx) -> None:
    raise GoneError(_GONE, code="SKILLS_V1_GONE")


async def legacy_skills_path(ctx: Ctx) -> None:
    raise GoneError(_GONE, code="SKILLS_V1_GONE")


for _method in ("GET", "POST", "DELETE"):
    for _path, _fn in (
        ("/api/app-config/skills", legacy_skills),
        ("/api/app-config/skills/{path:path}", legacy_skills_path),
    ):
        endpoint(_method, _path, summary="Legacy v1 skills API: always 410 Gone", tag="skills", errors=(410,))(_fn)
