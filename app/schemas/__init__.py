"""Request and response bodies of the HTTP API (pydantic), one module per resource, and their
mapping to the engine's dataclasses (bridge.types).

- common: the error body (ErrorOut) and its OpenAPI entries, JSON-valued form fields
- items: /v1/items;  search: /v1/search;  admin: /v1/admin;  health: /healthz, /readyz

Routes import from those modules; the names are also importable from `app.schemas`.
"""

from app.schemas.admin import ActivateIn, JobOut, RetrainIn, VersionOut, VersionsOut
from app.schemas.common import ErrorOut, error_responses, parse_json_field, unusable_json
from app.schemas.health import HealthOut, ReadyOut
from app.schemas.items import (
    ItemBatchCreated,
    ItemCreated,
    ItemOut,
    parse_metadata,
    parse_metadata_list,
)
from app.schemas.search import (
    SearchBatchRequest,
    SearchBatchResponse,
    SearchHitOut,
    SearchParams,
    SearchRequest,
    SearchResponseOut,
    params_to_query,
    search_response_json,
)

__all__ = [
    "ActivateIn",
    "ErrorOut",
    "HealthOut",
    "ItemBatchCreated",
    "ItemCreated",
    "ItemOut",
    "JobOut",
    "ReadyOut",
    "RetrainIn",
    "SearchBatchRequest",
    "SearchBatchResponse",
    "SearchHitOut",
    "SearchParams",
    "SearchRequest",
    "SearchResponseOut",
    "VersionOut",
    "VersionsOut",
    "error_responses",
    "params_to_query",
    "parse_json_field",
    "parse_metadata",
    "parse_metadata_list",
    "search_response_json",
    "unusable_json",
]
