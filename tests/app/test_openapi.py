"""The served OpenAPI document states what this server does (app/openapi.py): security only
where a key is configured, each space's vector length, links between operations, and the
`Allow` header of a 405 lists every method of the path. tests/contract/ drives a real server
with schemathesis against the same document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tiny_models import TINY_CLAP_DIM, TINY_CLIP_DIM

from bridge.service.retrain_plan import OVERRIDE_KEYS, OVERRIDE_MAXIMA, overrides_json_schema


def operations(spec: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return [
        op
        for item in spec["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and tag in op.get("tags", [])
    ]


@pytest.mark.parametrize("backend", ["faiss"], indirect=True)
def test_security_is_stated_only_where_a_key_is_configured(
    make_client: Callable[..., TestClient],
) -> None:
    open_spec = make_client().get("/openapi.json").json()
    for op in operations(open_spec, "items") + operations(open_spec, "search"):
        assert "security" not in op and "401" not in op["responses"], op["operationId"]
    for op in operations(open_spec, "admin"):  # the admin key is configured
        assert op["security"] == [{"AdminKey": []}] and "401" in op["responses"]
    keyed = make_client(api_key="k").get("/openapi.json").json()
    for op in operations(keyed, "items") + operations(keyed, "search"):
        assert op["security"] == [{"APIKey": []}] and "401" in op["responses"]


@pytest.mark.parametrize("backend", ["faiss"], indirect=True)
def test_vector_lengths_links_and_constraints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    request = spec["components"]["schemas"]["SearchRequest"]
    vectors = {
        alt["properties"]["space"]["const"]: alt["properties"]["vector"]
        for alt in request["oneOf"]
        if "vector" in alt["required"]
    }
    assert vectors["clip"]["minItems"] == vectors["clip"]["maxItems"] == TINY_CLIP_DIM
    assert vectors["clap"]["minItems"] == vectors["clap"]["maxItems"] == TINY_CLAP_DIM
    assert vectors["shared"]["minItems"] == 16  # train_tiny_bridge's shared_dim
    links = spec["paths"]["/v1/items"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        "get_item_v1_items__item_id__get",
        "delete_item_v1_items__item_id__delete",
        "get_item_content_v1_items__item_id__content_get",
    }
    job = spec["paths"]["/v1/admin/retrain"]["post"]["responses"]["202"]["links"]["GetJob"]
    assert job["parameters"] == {"job_id": "$response.body#/job_id"}
    batch = spec["paths"]["/v1/items/batch"]["post"]["requestBody"]["content"]
    assert batch["multipart/form-data"]["schema"]["properties"]["files"]["minItems"] == 1
    assert batch["multipart/form-data"]["encoding"]["metadata"]["contentType"] == "application/json"
    # A vector of the wrong length, or a string where k belongs, is what the schema refuses.
    body = {"vector": [0.5] * (TINY_CLIP_DIM - 1), "space": "clip", "target": "image"}
    assert client.post("/v1/search", json=body).status_code == 422
    assert (
        client.post("/v1/search", json={"text": "x", "target": "image", "k": "3"}).status_code
        == 422
    )
    assert client.post("/v1/search", json={"text": " \t", "target": "image"}).status_code == 422


def test_train_overrides_schema_names_every_key_with_its_ceiling() -> None:
    schema = overrides_json_schema()
    assert set(schema["properties"]) == set(OVERRIDE_KEYS) and not schema["additionalProperties"]
    for key, ceiling in OVERRIDE_MAXIMA.items():
        assert schema["properties"][key]["maximum"] == ceiling
    assert schema["properties"]["loss"]["enum"]  # a Literal field lists its choices


@pytest.mark.parametrize("backend", ["faiss"], indirect=True)
def test_405_allow_lists_every_method_of_the_path(client: TestClient) -> None:
    assert client.options("/v1/items/abc").headers["allow"] == "DELETE, GET"
    assert client.put("/v1/items/batch").headers["allow"] == "POST"  # not the {item_id} route's
    assert client.get("/v1/admin/activate").headers["allow"] == "POST"
    assert client.post("/", content=b"").headers["allow"] == "GET, HEAD"  # the search page
