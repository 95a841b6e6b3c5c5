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
from gateway.connectors.registry import KINDS
from gateway.http.api import ENDPOINTS, Endpoint, ErrorBody
from gateway.http.responses import JSON

STATIC = Path(__file__).parents[1] / "static" / "docs"
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
    from gateway.http import routes as rest

    rest.register()  # make sure every route module has registered its endpoints
    types: list[Any] = [ErrorBody]
    for ep in ENDPOINTS:
        bodies = ep.body if isinstance(ep.body, tuple) else (ep.body,)
        types.extend(t for t in (*bodies, ep.response, *ep.also.values()) if t is not None)
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
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                # Connector ingress only: what each kind checks besides a Bearer token (ConnectorKind).
                **{name: dict(scheme) for k in KINDS.values() for name, scheme in k.ingress_security.items()},
            },
        },
    }


def _operation(ep: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
        "summary": ep.summary,
        "tags": [ep.tag],
    }
    if ep.auth == "connector":
        op["security"] = _connector_security(ep.path)
    elif ep.auth != "none":
        op["security"] = [{"bearer": []}]
    typed = _fields(ep.params)[0] if ep.params is not None else {}
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": typed.get(name, {"type": "string"})}
        for name in re.findall(r"{(\w+)(?::\w+)?}", ep.path)
    ]
    if ep.query is not None:
        props, required = _fields(ep.query)
        for name, prop in props.items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    if ep.path.endswith("/chat") or ep.path == "/v1/chat/completions":
        params.append({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}})
    if params:
        op["parameters"] = params
    if isinstance(ep.body, tuple):
        choices = [_to_openapi30(refs[t]) for t in ep.body]
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"anyOf": choices}}}}
    elif ep.body is not None:
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
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            **{name: {"type": "string"} for name in ep.form_fields},
                        },
                        "required": ["file"],
                    }
                }
            },
        }
    if ep.example is not None and "requestBody" in op:
        for media in op["requestBody"]["content"].values():
            media["example"] = ep.example
    responses: dict[str, Any] = {}
    if ep.media is not None:
        # `*/*`: a file of any type (GET /files), so any body; otherwise bytes of that type.
        body_schema: dict[str, Any] = {} if ep.media == "*/*" else {"type": "string", "format": "binary"}
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
    for status, type_ in ep.also.items():
        responses[str(status)] = {"description": "OK"}
        if type_ is not None:
            responses[str(status)]["content"] = {"application/json": {"schema": _to_openapi30(refs[type_])}}
    codes = set(ep.errors) | {400, 413}
    if ep.auth != "none":
        codes |= {401}
    if ep.auth == "admin":  # "token" accepts the gateway token only: nothing else is let in, so no 403
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


def _fields(struct: type[Any]) -> tuple[dict[str, Any], list[str]]:
    """A flat Struct's properties and required names, for parameters (msgspec nests the Struct under `$defs`)."""
    schema = msgspec.json.schema(struct)
    defs = schema.get("$defs", {})
    top = defs[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    def inline(s: Any) -> Any:  # a Literal alias or a nested enum comes back as a `$defs` reference
        if isinstance(s, dict):
            if "$ref" in s:
                return inline(defs[s["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in s.items()}
        return [inline(v) for v in s] if isinstance(s, list) else s

    props = {name: _to_openapi30(inline(prop)) for name, prop in top.get("properties", {}).items()}
    return props, list(top.get("required", []))


def _connector_security(path: str) -> list[dict[str, list[str]]]:
    """What a connector's ingress checks (`{}`: none, with `allow_unauthenticated_ingress`)."""
    if "/credentials/" in path:
        return [{"bearer": []}]  # the sidecar's own short-lived token
    if "/external/" in path:
        return [{"bearer": []}, {}]  # the connector's shared_token
    own: list[dict[str, list[str]]] = [
        {name: []} for k in KINDS.values() if k.root_ingress for name in k.ingress_security
    ]
    return [{"bearer": []}, *own, {}]


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
        Route("/redoc", docs, methods=["GET"]),  # the platform seed's ReDoc path: the same built-in viewer
        Route("/docs/{name}", docs_asset, methods=["GET"]),
    ]
