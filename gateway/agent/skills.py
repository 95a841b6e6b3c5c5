"""Skills v2: load a bundle (local folder or GitHub tree URL), parse SKILL.md, apply the risk policy, install."""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import msgspec
import trio

from actors.store import Store
from gateway.errors import ConflictError, OwnerOnlyError, SkillInstallError, ValidationFailedError
from gateway.outbound import OutboundPolicy
from storage import settings as settings_db
from storage import skills as skills_db
from storage.clock import now_ms
from storage.skills import SkillRow

if TYPE_CHECKING:
    import httpx

MAX_FILES = 200
MAX_FILE_BYTES = 1024 * 1024
MAX_BUNDLE_BYTES = 5 * 1024 * 1024
MAX_CONTEXT_CHARS = 64 * 1024
RISKY_SUFFIXES = {".sh", ".bash", ".py", ".js", ".mjs", ".ts", ".ps1", ".bat", ".cmd", ".exe", ".rb", ".pl"}
RISKY_TOOLS = {"bash", "shell", "exec", "computer", "terminal"}
POLICY_KEY = "skills.policy"
PolicyMode = Literal["off", "enforce_confirmation"]
_GITHUB_TREE = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+)/tree/([^/]+)(?:/(.*))?$")


class Bundle(msgspec.Struct, frozen=True):
    files: dict[str, bytes]  # relative posix path -> content
    executable: frozenset[str] = frozenset()


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:64]


def parse_skill_md(text: str) -> tuple[dict[str, Any], str]:
    """Split SKILL.md into its YAML frontmatter (validated) and the body given to the model."""
    if not text.startswith("---"):
        raise SkillInstallError("SKILL.md must start with YAML frontmatter between '---' lines")
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise SkillInstallError("SKILL.md frontmatter is not closed by a '---' line")
    import yaml  # only installing a skill parses YAML: a gateway that never does so never loads it

    try:
        meta = yaml.safe_load(parts[0].lstrip("-").strip() or "{}")
    except yaml.YAMLError as exc:
        raise SkillInstallError(f"SKILL.md frontmatter is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise SkillInstallError("SKILL.md frontmatter must be a mapping of keys to values")
    problems: list[dict[str, Any]] = []
    name = meta.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        problems.append({"field": "name", "message": "required, a string of 1 to 64 characters"})
    desc = meta.get("description")
    if not isinstance(desc, str) or not desc.strip() or len(desc) > 1024:
        problems.append({"field": "description", "message": "required, a string of 1 to 1024 characters"})
    if meta.get("runtime", "native") not in ("native", "mcp", "a2a"):
        problems.append({"field": "runtime", "message": "one of native, mcp, a2a"})
    version = meta.get("version", "0.1.0")
    if not isinstance(version, (str, int, float)):
        problems.append({"field": "version", "message": "a version string such as 1.2.0"})
    if problems:
        for p in problems:
            p["loc"] = ["SKILL.md", "frontmatter", p["field"]]
        raise SkillInstallError("SKILL.md frontmatter is invalid", details=problems)
    body = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    return meta, body.strip()


def assess_risk(meta: dict[str, Any], bundle: Bundle) -> list[str]:
    """Reasons this skill could act on the machine (scripts, shell tools); empty when it is text only."""
    reasons = []
    scripts = sorted(p for p in bundle.files if Path(p).suffix.lower() in RISKY_SUFFIXES or p in bundle.executable)
    if scripts:
        reasons.append(f"contains scripts: {', '.join(scripts[:5])}{' …' if len(scripts) > 5 else ''}")
    tools = meta.get("allowed-tools") or meta.get("allowed_tools") or []
    if isinstance(tools, str):
        tools = re.split(r"[,\s]+", tools)
    risky = sorted({str(t) for t in tools if str(t).split("(")[0].lower() in RISKY_TOOLS})
    if risky:
        reasons.append(f"asks for shell-like tools: {', '.join(risky)}")
    if str(meta.get("risk", "")).lower() == "high":
        reasons.append("declares itself high risk")
    return reasons


def _add(files: dict[str, bytes], total: list[int], rel: str, data: bytes) -> None:
    if len(files) >= MAX_FILES:
        raise SkillInstallError(f"the bundle has more than {MAX_FILES} files")
    if len(data) > MAX_FILE_BYTES:
        raise SkillInstallError(f"{rel} is larger than {MAX_FILE_BYTES // 1024} KiB")
    total[0] += len(data)
    if total[0] > MAX_BUNDLE_BYTES:
        raise SkillInstallError(f"the bundle is larger than {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB")
    files[rel] = data


def load_local(path: str) -> Bundle:
    """Read a skill folder (blocking; run it in a thread). Symlinks and hidden entries are skipped."""
    root = Path(path)
    if not root.is_absolute():
        raise SkillInstallError("source_ref must be an absolute path for source_type=local")
    if not root.is_dir():
        raise SkillInstallError(f"{path} is not a folder")
    files: dict[str, bytes] = {}
    executable: set[str] = set()
    total = [0]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            st = full.lstat()
            if fname.startswith(".") or not stat.S_ISREG(st.st_mode):
                continue  # symlinks could point outside the bundle: never follow them
            rel = full.relative_to(root).as_posix()
            _add(files, total, rel, full.read_bytes())
            if st.st_mode & 0o111:
                executable.add(rel)
    return Bundle(files, frozenset(executable))


async def load_github(url: str, *, api_base: str, client: httpx.AsyncClient) -> Bundle:
    """Fetch a skill folder given as a GitHub tree URL through the contents API."""
    m = _GITHUB_TREE.match(url)
    if not m:
        raise SkillInstallError("source_ref must look like https://github.com/OWNER/REPO/tree/REF/PATH")
    owner, repo, ref, sub = m.group(1), m.group(2), m.group(3), (m.group(4) or "").strip("/")
    import httpx  # the caller made the client; bound here for the except clause

    files: dict[str, bytes] = {}
    total = [0]

    async def walk(path: str) -> None:
        api = f"{api_base.rstrip('/')}/repos/{owner}/{repo}/contents/{quote(path)}"
        r = await client.get(api, params={"ref": ref})
        if r.status_code == 404:
            raise SkillInstallError(f"GitHub has no {path or '/'} in {owner}/{repo} at {ref}")
        if r.status_code != 200:
            raise SkillInstallError(f"GitHub answered HTTP {r.status_code} for {path or '/'}")
        items = r.json()
        if not isinstance(items, list):
            raise SkillInstallError(f"{url} is a file, not a folder")
        for item in sorted(items, key=lambda i: str(i.get("path", ""))):
            name, kind = str(item.get("name", "")), item.get("type")
            if name.startswith("."):
                continue
            rel = str(item["path"])[len(sub) :].lstrip("/") if sub else str(item["path"])
            if kind == "dir":
                await walk(str(item["path"]))
            elif kind == "file" and item.get("download_url"):
                if int(item.get("size", 0)) > MAX_FILE_BYTES:
                    raise SkillInstallError(f"{rel} is larger than {MAX_FILE_BYTES // 1024} KiB")
                raw = await client.get(str(item["download_url"]))
                if raw.status_code != 200:
                    raise SkillInstallError(f"GitHub answered HTTP {raw.status_code} for {rel}")
                _add(files, total, rel, raw.content)

    try:
        await walk(sub)
    except httpx.HTTPError as exc:
        raise SkillInstallError(f"cannot reach GitHub: {type(exc).__name__}: {exc}") from None
    return Bundle(files)


def _write_bundle(skills_dir: Path, slug: str, bundle: Bundle, skill_md: str) -> None:
    """Write the bundle to a temporary folder, then swap it in (an update never leaves half a skill)."""
    skills_dir.mkdir(parents=True, exist_ok=True)
    tmp = skills_dir / f".{slug}.{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for rel, data in bundle.files.items():
            target = (tmp / rel).resolve()
            if not target.is_relative_to(tmp.resolve()):
                raise SkillInstallError(f"bundle path {rel!r} escapes the skill folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (tmp / "SKILL.md").write_text(skill_md)
        final = skills_dir / slug
        old = skills_dir / f".{slug}.old.{uuid.uuid4().hex}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


async def get_policy(store: Store) -> PolicyMode:
    value = await store.call(settings_db.get_setting, POLICY_KEY)
    return "enforce_confirmation" if value == "enforce_confirmation" else "off"


async def set_policy(store: Store, mode: PolicyMode) -> None:
    await store.call(settings_db.set_setting, POLICY_KEY, mode)


async def install(
    *,
    store: Store,
    skills_dir: Path,
    source_type: str,
    source_ref: str,
    skill_md: str = "",
    confirm_risk: bool = False,
    installed_by: str | None = None,
    by_owner: bool = True,
    github_api: str = "https://api.github.com",
    outbound: OutboundPolicy | None = None,
) -> tuple[SkillRow, list[str]]:
    """Install or update a skill; return it with the risk reasons found (empty when text only).

    Unless `by_owner`, a local folder (reading a path of the host) and a skill that is not text only raise
    OwnerOnlyError (403): those reach the host, which is the owner's alone.
    """
    if source_type == "local":
        if not by_owner:
            raise OwnerOnlyError("installing a skill from a local folder reads a path of the host")
        try:
            bundle = await trio.to_thread.run_sync(load_local, source_ref)
        except OSError as exc:  # unreadable file or folder: the caller's mistake, not ours
            raise SkillInstallError(f"cannot read {source_ref}: {exc.strerror or exc}") from None
    elif source_type == "github":
        # Public GitHub only (each redirect hop checked too) unless the owner's `[outbound] allow` says otherwise:
        # the contents API names the download URLs, and an admin account names the repository.
        policy = outbound if outbound is not None else OutboundPolicy()
        async with policy.client(timeout=20, follow_redirects=True) as c:
            bundle = await load_github(source_ref, api_base=github_api, client=c)
    else:
        raise SkillInstallError("source_type must be local or github")
    md = skill_md or (bundle.files.get("SKILL.md", b"").decode("utf-8", "replace"))
    if not md:
        raise SkillInstallError("the bundle has no SKILL.md (and none was given as skill_md)")
    meta, body = parse_skill_md(md)
    reasons = assess_risk(meta, bundle)
    if reasons and not by_owner:
        raise OwnerOnlyError(f"this skill could act on the host ({'; '.join(reasons)})")
    if reasons and not confirm_risk and await get_policy(store) == "enforce_confirmation":
        raise ConflictError(
            "this skill needs confirmation under the risk policy; repeat with confirm_risk=true",
            code="SKILL_RISK_CONFIRMATION_REQUIRED",
            details=reasons,
        )
    slug = slugify(str(meta.get("slug") or meta["name"]))
    if not slug:
        raise ValidationFailedError("the skill's name gives an empty slug", details=[{"field": "name"}])
    await trio.to_thread.run_sync(_write_bundle, skills_dir, slug, bundle, md)
    refs = sum(1 for rel in bundle.files if rel != "SKILL.md" and rel in body)
    item = {
        "slug": slug,
        "name": str(meta["name"]).strip(),
        "description": str(meta["description"]).strip(),
        "version": str(meta.get("version", "0.1.0")),
        "source_type": source_type,
        "source_ref": source_ref,
        "runtime_type": str(meta.get("runtime", "native")),
        "installed_by": installed_by,
        "bundle_file_count": len(bundle.files),
        "context_ref_count": refs,
        "context": body[:MAX_CONTEXT_CHARS],
    }
    row = await store.call(skills_db.upsert_skill, item, now_ms=now_ms())
    return row, reasons


class SkillCatalog:
    """The enabled skills' text, kept in memory for the provider; refreshed after every change."""

    def __init__(self) -> None:
        self._contexts: list[str] = []

    async def refresh(self, store: Store) -> None:
        rows: Sequence[SkillRow] = await store.call(skills_db.list_skills)
        self._contexts = [f"# Skill: {r.name}\n{r.description}\n\n{r.context}" for r in rows if r.enabled]

    def contexts(self) -> list[str]:
        return list(self._contexts)
