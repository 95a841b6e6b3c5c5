"""Agent settings over REST: the LLM endpoint (its key never shown), agent limits and models.json."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from gateway.agent import live_config
from gateway.errors import ModelsJsonTooLargeError, ValidationFailedError
from gateway.http.api import Ctx, endpoint
from gateway.outbound import check_settable

Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=2048)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\s]+$")]
# Printable ASCII only: the key goes into an HTTP header, where a newline would be an injection.
ApiKey = Annotated[str, msgspec.Meta(max_length=4096, pattern=r"^[\x21-\x7e]*$")]
ProviderName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
MAX_MODELS_JSON = 256 * 1024


class LlmConfig(msgspec.Struct, kw_only=True):
    base_url: str
    model_name: str
    temperature: float | None
    max_tokens: int | None
    provider: str
    api_key_configured: bool


class LlmUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every field optional: absent keeps the value, null goes back to the config file's value."""

    base_url: Url | UnsetType | None = UNSET
    api_key: ApiKey | UnsetType | None = UNSET  # empty or absent: keep the stored key
    model_name: ModelName | UnsetType | None = UNSET
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | UnsetType | None = UNSET
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1000000)] | UnsetType | None = UNSET
    provider: ProviderName | UnsetType | None = UNSET


class AgentConfig(msgspec.Struct, kw_only=True):
    max_iterations: int
    max_retries: int
    max_search_results: int


class AgentUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_iterations: Annotated[int, msgspec.Meta(ge=1, le=1000)] | UnsetType = UNSET
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] | UnsetType = UNSET
    max_search_results: Annotated[int, msgspec.Meta(ge=1, le=100)] | UnsetType = UNSET


async def _llm_view(ctx: Ctx) -> LlmConfig:
    rt = ctx.runtime
    openai = live_config.openai_of(rt)
    s = openai.settings if openai is not None else None
    return LlmConfig(
        base_url=s.base_url if s else "",
        model_name=s.model if s else "",
        temperature=s.temperature if s else None,
        max_tokens=s.max_tokens if s else None,
        provider=rt.choice.provider,
        api_key_configured=bool(s and s.api_key),
    )


@endpoint(
    "GET", "/api/app-config/llm", summary="The LLM settings (the API key is never shown)", tag="app-config",
    response=LlmConfig,
)  # fmt: skip
async def get_llm(ctx: Ctx) -> LlmConfig:
    return await _llm_view(ctx)


@endpoint(
    "POST",
    "/api/app-config/llm",
    summary="Change the LLM settings; the next turn uses them (an empty api_key keeps the stored one)",
    tag="app-config",
    auth="admin",
    body=LlmUpdate,
    response=LlmConfig,
    errors=(403, 422),
)
async def post_llm(ctx: Ctx) -> LlmConfig:
    req: LlmUpdate = ctx.body
    if isinstance(req.provider, str) and req.provider not in ctx.runtime.providers:
        known = ", ".join(sorted(ctx.runtime.providers))
        raise ValidationFailedError(
            f"unknown provider {req.provider!r}; use one of {known}",
            details=[{"loc": ["body", "provider"], "message": f"one of {known}"}],
        )
    update = {
        f: getattr(req, f)
        for f in ("base_url", "model_name", "temperature", "max_tokens", "provider")
        if getattr(req, f) is not UNSET
    }
    by_owner = ctx.user.is_owner
    if isinstance(req.base_url, str):
        llm = live_config.live_of(ctx.runtime).llm
        owners = [llm.base_url] if llm.base_url and llm.base_url_by_owner else []
        await check_settable(ctx.runtime.outbound, req.base_url, by_owner=by_owner, what="base_url", trusted=owners)
    api_key = req.api_key if isinstance(req.api_key, str) else None
    await live_config.update_llm(ctx.runtime, update, api_key or None, by_owner=by_owner)
    return await _llm_view(ctx)


def _agent_view(ctx: Ctx) -> AgentConfig:
    a = live_config.agent_settings(ctx.runtime)
    return AgentConfig(
        max_iterations=a.max_iterations, max_retries=a.max_retries, max_search_results=a.max_search_results
    )


@endpoint("GET", "/api/app-config/agent", summary="The agent's limits", tag="app-config", response=AgentConfig)
async def get_agent(ctx: Ctx) -> AgentConfig:
    return _agent_view(ctx)


@endpoint(
    "POST",
    "/api/app-config/agent",
    summary="Change the agent's limits (tool rounds per turn, retries); absent fields keep their value",
    tag="app-config",
    auth="admin",
    body=AgentUpdate,
    response=AgentConfig,
    errors=(422,),
)
async def post_agent(ctx: Ctx) -> AgentConfig:
    req: AgentUpdate = ctx.body
    current = live_config.agent_settings(ctx.runtime)
    changes = {f: getattr(req, f) for f in AgentUpdate.__struct_fields__ if getattr(req, f) is not UNSET}
    await live_config.update_agent(ctx.runtime, msgspec.structs.replace(current, **changes))
    return _agent_view(ctx)


@endpoint(
    "GET", "/api/models-json", summary="The models.json document (models offered per provider)", tag="app-config",
    response=dict[str, Any],
)  # fmt: skip
async def get_models_json(ctx: Ctx) -> dict[str, Any]:
    return live_config.live_of(ctx.runtime).models_json


@endpoint(
    "PATCH",
    "/api/models-json",
    summary="Merge a JSON object into models.json (JSON merge patch: null removes a key)",
    tag="app-config",
    auth="admin",
    body=dict[str, Any],
    response=dict[str, Any],
    errors=(413, 422),
)
async def patch_models_json(ctx: Ctx) -> dict[str, Any]:
    patch: dict[str, Any] = ctx.body
    providers = patch.get("providers")
    if providers is not None and not isinstance(providers, dict):
        raise ValidationFailedError(
            "providers must be an object of provider name to {models: [...]}",
            details=[{"loc": ["body", "providers"], "message": "an object"}],
        )
    try:
        return await live_config.patch_models_json(ctx.runtime, patch, max_bytes=MAX_MODELS_JSON)
    except ValueError as exc:
        raise ModelsJsonTooLargeError(str(exc)) from None
