"""The agent's live settings: LLM endpoint (its key a secret), agent limits and models.json, stored over the API."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from actors.providers.openai import OpenAIProvider, OpenAISettings
from gateway.core import Runtime, started
from gateway.logs import redactor
from storage import secrets as secrets_db
from storage import settings as settings_db
from storage.clock import now_ms

log = logging.getLogger("gateway.agent_config")

LLM_KEY = "app_config.llm"
AGENT_KEY = "app_config.agent"
MODELS_KEY = "models_json"
API_KEY_SLOT = "app_config.llm.api_key"


class LlmSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What `POST /api/app-config/llm` stored; None means "the config file's value"."""

    base_url: str | None = None
    # The owner (gateway token) set base_url, so it may be a private address; absent or false: an admin account
    # set it, and the outbound policy keeps it public (docs/reliability.md, "Outbound requests").
    base_url_by_owner: bool | None = None
    model_name: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    provider: str | None = None


class AgentSettings(msgspec.Struct, kw_only=True):
    max_iterations: int
    max_retries: int
    max_search_results: int = 10


def openai_of(runtime: Runtime) -> OpenAIProvider | None:
    provider = runtime.providers.get("openai")
    return provider if isinstance(provider, OpenAIProvider) else None


class LiveConfig(msgspec.Struct):
    """The stored overrides, kept in memory; the `openai` provider's settings are rebuilt from them on change."""

    baseline: OpenAISettings | None  # from the config file, before any override
    default_provider: str
    llm: LlmSettings = msgspec.field(default_factory=LlmSettings)
    api_key: str = ""
    agent: AgentSettings | None = None
    models_json: dict[str, Any] = msgspec.field(default_factory=dict)


def live_of(runtime: Runtime) -> LiveConfig:
    return started(runtime.services.live_config, "the live agent config")


async def load(runtime: Runtime) -> None:
    """Apply what the REST API stored over the config file's values (called once at startup)."""
    openai = openai_of(runtime)
    live = LiveConfig(openai.settings if openai is not None else None, runtime.choice.provider)
    runtime.services.live_config = live

    def read(conn: Any) -> tuple[str | None, str | None, str | None, str | None]:
        return (
            settings_db.get_setting(conn, LLM_KEY),
            secrets_db.get_secret(conn, API_KEY_SLOT),
            settings_db.get_setting(conn, AGENT_KEY),
            settings_db.get_setting(conn, MODELS_KEY),
        )

    llm, key, agent, models = await runtime.store.call(read)
    redactor.add(key)
    try:
        live.llm = msgspec.json.decode(llm, type=LlmSettings) if llm else LlmSettings()
        live.agent = msgspec.json.decode(agent, type=AgentSettings) if agent else None
        doc = msgspec.json.decode(models) if models else {}
        live.models_json = doc if isinstance(doc, dict) else {}
    except msgspec.DecodeError as exc:  # hand-edited database: start with the file's settings, say why
        log.error("ignoring the stored agent settings: %s", exc)
    live.api_key = key or ""
    _rebuild(runtime)


def _rebuild(runtime: Runtime) -> None:
    live = live_of(runtime)
    openai = openai_of(runtime)
    if openai is not None and live.baseline is not None:
        llm = live.llm
        changes: dict[str, Any] = {}
        if llm.base_url is not None:
            changes["base_url"] = llm.base_url
            changes["base_url_trusted"] = bool(llm.base_url_by_owner)
        if llm.model_name is not None:
            changes["model"] = llm.model_name
        if llm.temperature is not None:
            changes["temperature"] = llm.temperature
        if llm.max_tokens is not None:
            changes["max_tokens"] = llm.max_tokens
        if live.api_key:
            changes["api_key"] = live.api_key
        if live.agent is not None:
            changes["max_iterations"] = live.agent.max_iterations
            changes["max_retries"] = live.agent.max_retries
        listed = models_of(live.models_json, "openai")
        if listed:
            changes["models"] = tuple(listed)
        # Turns read the settings when they start: the next turn uses these, a running one keeps its own.
        openai.settings = msgspec.structs.replace(live.baseline, **changes)
    wanted = live.llm.provider or live.default_provider
    if wanted in runtime.providers:
        runtime.choice.provider = wanted
    else:
        log.warning("stored default provider %r is not available; using %r", wanted, live.default_provider)
        runtime.choice.provider = live.default_provider


async def update_llm(runtime: Runtime, update: dict[str, Any], api_key: str | None, *, by_owner: bool) -> None:
    """Merge `update` (field -> value, None to go back to the config file's) into the stored LLM settings;
    keep the key when `api_key` is empty; the next turn uses the result. `by_owner`: the gateway token asks."""
    live = live_of(runtime)
    if "base_url" in update:
        url = update["base_url"]
        # Re-sending the owner's URL unchanged keeps it the owner's; any other change is the caller's.
        kept = url is not None and url == live.llm.base_url and bool(live.llm.base_url_by_owner)
        update = {**update, "base_url_by_owner": (by_owner or kept) if url is not None else None}
    merged = msgspec.structs.replace(live.llm, **update)
    doc = msgspec.json.encode(merged).decode()
    now = now_ms()
    redactor.add(api_key)  # before anything could log it

    def write(conn: Any) -> None:
        settings_db.set_setting(conn, LLM_KEY, doc)
        if api_key:
            secrets_db.put_secret(conn, API_KEY_SLOT, api_key, now_ms=now)

    await runtime.store.call(write)
    live.llm = merged
    if api_key:
        live.api_key = api_key
    _rebuild(runtime)


def agent_settings(runtime: Runtime) -> AgentSettings:
    live = live_of(runtime)
    if live.agent is not None:
        return live.agent
    o = runtime.config.providers.openai
    return AgentSettings(max_iterations=o.max_iterations, max_retries=o.max_retries)


async def update_agent(runtime: Runtime, agent: AgentSettings) -> None:
    await runtime.store.call(settings_db.set_setting, AGENT_KEY, msgspec.json.encode(agent).decode())
    live_of(runtime).agent = agent
    _rebuild(runtime)


# ---- models.json ----


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def models_of(doc: dict[str, Any], provider: str) -> list[str]:
    """The model ids models.json lists for a provider: `{"providers": {"openai": {"models": ["a", {"id": "b"}]}}}`."""
    providers = doc.get("providers")
    entry = providers.get(provider) if isinstance(providers, dict) else None
    models = entry.get("models") if isinstance(entry, dict) else None
    out: list[str] = []
    for m in models if isinstance(models, list) else []:
        mid = m.get("id") if isinstance(m, dict) else m
        if isinstance(mid, str) and mid and mid not in out:
            out.append(mid)
    return out


async def patch_models_json(runtime: Runtime, patch: dict[str, Any], *, max_bytes: int) -> dict[str, Any]:
    """Merge `patch` into models.json and store it; raise ValueError when the result would be too large."""
    live = live_of(runtime)
    doc: dict[str, Any] = merge_patch(live.models_json, patch)
    encoded = msgspec.json.encode(doc).decode()
    if len(encoded) > max_bytes:
        raise ValueError(f"models.json would be larger than {max_bytes} bytes")
    await runtime.store.call(settings_db.set_setting, MODELS_KEY, encoded)
    live.models_json = doc
    _rebuild(runtime)
    return doc
