"""`/openapi.json`, built from the same msgspec types that validate requests, and `/docs`, a viewer shipped here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import __version__
from gateway.api import ENDPOINTS, Endpoint, ErrorBody
from gateway.asgi import JSON

STATIC = Path(__file__).parent / "static" / "docs"
_REF = "#/components/schemas/{name}"
_REASONS = {
    400: "Malformed request",
    401: "Missing or invalid credentials",
    403: "Forbidden (not yours, or needs super_admin)",
    404: "Not found",
    409: "Conflict",
    410: "Gone (a retired API)",
    413: "Body too large",
    422: "A field is invalid (details name it)",
    429: "Rate limited (Retry-After header, details.retry_after)",
    501: "Not configured on this gateway",
    502: "An upstream service failed",
    503: "A service is unavailable",
}


def build_openapi() -> dict[str, Any]:
    """Return the OpenAPI 3.0 document for every registered endpoint."""
    from gateway.api import routes as _register

    _register()  # make sure every route module has registered its endpoints
    types: list[Any] = [ErrorBody]
    for ep in ENDPOINTS:
        types.extend(t for t in (ep.body, ep.response) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        # Starlette's converters (`{path:path}`) are not OpenAPI: the template keeps the name only.
        paths.setdefault(re.sub(r"{(\w+):\w+}", r"{\1}", ep.path), {})[ep.method.lower()] = _operation(ep, refs)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Agent gateway REST API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": _to_openapi30(components),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(ep: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
        "summary": ep.summary,
        "tags": [ep.tag],
    }
    if ep.auth != "none":
        op["security"] = [{"bearer": []}]
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)(?::\w+)?}", ep.path)
    ]
    if ep.query is not None:
        qschema = _to_openapi30(msgspec.json.schema(ep.query))
        for name, prop in qschema.get("properties", {}).items():
            params.append(
                {"name": name, "in": "query", "required": name in qschema.get("required", []), "schema": prop}
            )
    if ep.path.endswith("/chat") or ep.path == "/v1/chat/completions":
        params.append({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}})
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _to_openapi30(refs[ep.body])}},
        }
    elif ep.multipart:
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                }
            },
        }
    responses: dict[str, Any] = {}
    if ep.media is not None:
        body_schema: dict[str, Any] = {"type": "string", "format": "binary"}
        if ep.media == "text/event-stream":
            # Described per event, as SSE-aware tools read it: `data` is one JSON document (or `[DONE]`).
            body_schema = {
                "type": "object",
                "properties": {name: {"type": "string"} for name in ("id", "event", "data", "retry")},
            }
        content: dict[str, Any] = {ep.media: {"schema": body_schema}}
        if ep.response is not None:
            content["application/json"] = {"schema": _to_openapi30(refs[ep.response])}
        responses[str(ep.status)] = {"description": "OK", "content": content}
    elif ep.response is not None:
        responses[str(ep.status)] = {
            "description": "OK",
            "content": {"application/json": {"schema": _to_openapi30(refs[ep.response])}},
        }
    else:
        responses[str(ep.status)] = {"description": "OK"}
    codes = set(ep.errors) | {400, 413}
    if ep.auth != "none":
        codes |= {401}
    if ep.auth == "admin":
        codes |= {403}
    if ep.body is not None or ep.query is not None:
        codes |= {422}
    if ep.group is not None:
        codes |= {429}
    error_ref = {"$ref": _REF.format(name="ErrorBody")}
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _REASONS.get(code, "Error"),
            "content": {"application/json": {"schema": error_ref}},
        }
    op["responses"] = responses
    return op


def _to_openapi30(schema: Any) -> Any:
    """msgspec emits JSON Schema 2020-12; OpenAPI 3.0 wants `nullable` instead of a `null` type in anyOf."""
    if isinstance(schema, list):
        return [_to_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _to_openapi30(v) for k, v in schema.items() if k != "$defs"}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and any(o == {"type": "null"} for o in options):
            rest = [o for o in options if o != {"type": "null"}]
            del out[key]
            if len(rest) == 1 and "$ref" not in rest[0]:
                out.update(rest[0])
            else:
                out[key] = rest
            out["nullable"] = True
    for bound, key in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[key] = out[bound]
            out[bound] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


_cached: bytes | None = None


async def openapi_json(request: Request) -> Response:
    global _cached
    if _cached is None:
        _cached = msgspec.json.encode(build_openapi())
    return Response(_cached, media_type="application/json")


async def docs(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in {"viewer.js", "viewer.css"}:
        return JSON({"error": {"code": "NOT_FOUND", "message": "no such file"}}, status_code=404)
    media = "text/javascript" if name.endswith(".js") else "text/css"
    return FileResponse(STATIC / name, media_type=media)


def routes() -> list[BaseRoute]:
    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/{name}", docs_asset, methods=["GET"]),
    ]
