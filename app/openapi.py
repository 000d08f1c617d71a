"""The served OpenAPI document: FastAPI's, completed with what only the running server knows.

FastAPI writes the document from the routes and models once; three things in it depend on
how this server runs, and a client (or schemathesis, in tests/app/test_contract.py) must be
able to trust every constraint it states:

- security: item and search routes need the API key only when BRIDGE_API_KEY is set;
- vector lengths: a `clip`, `clap` or `shared` query vector must have that space's
  dimension, known once the engine has loaded (and, for `shared`, per active bridge);
- links: an item's id from POST /v1/items feeds GET/DELETE /v1/items/{item_id} and its
  content, a job id from POST /v1/admin/retrain feeds GET /v1/admin/jobs/{job_id}.

The document is rebuilt when the dimensions it states change (engine loaded, another
bridge activated) and cached otherwise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastapi.openapi.utils import get_openapi

from app.schemas.search import search_request_schema

if TYPE_CHECKING:
    from fastapi import FastAPI

    from app.settings import Settings
    from app.state import ServiceHolder

API_KEY_SCHEME = "APIKey"
SEARCH_SCHEMA = "SearchRequest"
# Space name -> vector length; a space is absent while its dimension is unknown.
Dims = dict[str, int]


def served_dims(holder: ServiceHolder) -> Dims:
    """The query vector lengths of the loaded engine ({} while it loads)."""
    service = holder.peek()
    return {} if service is None else service.query_dims()


# (path, method, status) -> {link name: (target path, target method, parameters)}
_LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/v1/items", "post", "201"): {
        "GetItem": ("/v1/items/{item_id}", "get", {"item_id": "$response.body#/id"}),
        "GetItemContent": (
            "/v1/items/{item_id}/content",
            "get",
            {"item_id": "$response.body#/id"},
        ),
        "DeleteItem": ("/v1/items/{item_id}", "delete", {"item_id": "$response.body#/id"}),
    },
    ("/v1/admin/retrain", "post", "202"): {
        "GetJob": ("/v1/admin/jobs/{job_id}", "get", {"job_id": "$response.body#/job_id"}),
    },
}


def build_openapi(app: FastAPI, settings: Settings, dims: Dims) -> dict[str, Any]:
    """FastAPI's document for `app`, completed for these settings and dimensions."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    operations = [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
    ]
    if settings.api_key is None:  # item and search routes are open: say so
        for _, _, op in operations:
            if any(API_KEY_SCHEME in s for s in op.get("security", [])):
                del op["security"]
                op.get("responses", {}).pop("401", None)
        doc["components"].get("securitySchemes", {}).pop(API_KEY_SCHEME, None)
    served = search_request_schema(dims)
    doc["components"]["schemas"][SEARCH_SCHEMA] = served
    json_body = doc["paths"]["/v1/search"]["post"]["requestBody"]["content"]["application/json"]
    json_body["schema"] = {"$ref": f"#/components/schemas/{SEARCH_SCHEMA}"}
    for (path, method, status), links in _LINKS.items():
        doc["paths"][path][method]["responses"][status]["links"] = {
            name: {
                "operationId": doc["paths"][target][how]["operationId"],
                "parameters": dict(parameters),
            }
            for name, (target, how, parameters) in links.items()
        }
    return doc


def allowed_methods(app: FastAPI, path: str) -> str:
    """The methods the served document lists for `path`, as an `Allow` header ("" if none):
    a literal path's own (POST /v1/items/batch), else those of every template matching it
    (/v1/items/{item_id} matches any one segment)."""
    paths = app.openapi()["paths"]
    if path in paths:
        matching = [paths[path]]
    else:
        matching = [
            item
            for template, item in paths.items()
            if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path)
        ]
    methods = {method.upper() for item in matching for method in item if method != "parameters"}
    return ", ".join(sorted(methods))


def install_openapi(app: FastAPI, settings: Settings, holder: ServiceHolder) -> None:
    """Serve `build_openapi`'s document at /openapi.json (and to /docs), rebuilt when the
    dimensions change."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        dims = served_dims(holder)
        key = tuple(sorted(dims.items()))
        if cache.get("key") != key:
            cache["doc"] = build_openapi(app, settings, dims)
            cache["key"] = key
        doc: dict[str, Any] = cache["doc"]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
