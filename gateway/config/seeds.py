"""The seeds' own config tables (`[api]` of the E2E API, `[gateway]` of the CLI/REST gateway) folded into ours."""

from __future__ import annotations

from typing import Any

# Each seed table: its key -> (our section, our key). `enabled` of `[api]` stays in `[api]` (Config.api).
_API = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "token": ("server", "token"),
    "chat_id": ("server", "chat_id"),
    "allow_public": ("server", "allow_public"),
}
_GATEWAY = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "auth.api_key": ("server", "token"),
    "cors.enabled": ("cors", "enabled"),
    "cors.origins": ("cors", "origins"),
    "cors.credentials": ("cors", "credentials"),
}


class SeedConfigError(Exception):
    """A seed table cannot be used as written; the message names the setting and says what to do."""


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _fold(data: dict[str, Any], name: str, mapping: dict[str, tuple[str, str]], keep: set[str]) -> dict[str, Any]:
    table = data.pop(name)
    if not isinstance(table, dict):
        raise SeedConfigError(f"setting {name}: expected a table")
    kept: dict[str, Any] = {}
    for key, value in _flatten(table).items():
        if key in keep:
            kept[key] = value
            continue
        if name == "gateway" and key == "auth.enabled":
            if value is not True:
                raise SeedConfigError(
                    "setting gateway.auth.enabled: this gateway always requires its token (or a user's login); "
                    "remove the setting or set it to true"
                )
            continue
        if name == "api" and key == "chat_id" and value == 0:
            continue  # the seed's 0 means "the default chat": ours is server.chat_id
        if key not in mapping:
            known = ", ".join(sorted([*mapping, *keep]))
            raise SeedConfigError(f"setting {name}.{key}: unknown field `{key}` (known here: {known})")
        section, field = mapping[key]
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise SeedConfigError(f"setting {section}: expected a table")
        if field in target and target[field] != value:
            raise SeedConfigError(
                f"settings {name}.{key} and {section}.{field} disagree ({value!r} vs {target[field]!r}); "
                "keep one of them"
            )
        target[field] = value
    return kept


def fold_seed_tables(data: dict[str, Any]) -> dict[str, Any]:
    """Return `data` with `[api]` and `[gateway]` turned into our settings (a new dict; `data` is unchanged).

    `[api]` (host, port, token, chat_id, allow_public) and `[gateway]` (host, port, auth.api_key, cors.*) name
    the same settings as `[server]` and `[cors]`; a value given in both places must agree. Raises
    SeedConfigError for an unknown key, a disagreement or `gateway.auth.enabled = false`.
    """
    if "api" not in data and "gateway" not in data:
        return data
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    api: dict[str, Any] = {}
    if "api" in data:
        api = _fold(data, "api", _API, keep={"enabled"})
    if "gateway" in data:
        _fold(data, "gateway", _GATEWAY, keep=set())
    if api:
        data["api"] = api
    return data
