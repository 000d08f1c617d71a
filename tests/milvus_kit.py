"""What the Milvus tests need: pymilvus and Milvus Lite (the `milvus` extra), and for the
end-to-end tests a real Milvus server (the `milvus-server` extra's embedded standalone
server). `make test` installs both. Without them the tests skip, unless
BRIDGE_REQUIRE_MILVUS=1 (CI), which makes a missing extra a failure instead of a silent
skip."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from bridge.index.milvus_server import EmbeddedMilvus

# Read at import: the API tests' fixtures clear BRIDGE_* variables before each test.
REQUIRED = os.environ.get("BRIDGE_REQUIRE_MILVUS") == "1"


def require_milvus() -> None:
    """Skip (or fail under BRIDGE_REQUIRE_MILVUS=1) when the milvus extra is missing."""
    missing = [m for m in ("pymilvus", "milvus_lite") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    reason = f"the milvus extra is not installed (no {', '.join(missing)})"
    if REQUIRED:
        pytest.fail(f"BRIDGE_REQUIRE_MILVUS=1 but {reason}")
    pytest.skip(reason)


def require_milvus_server() -> None:
    """Skip (or fail under BRIDGE_REQUIRE_MILVUS=1) without the milvus-server extra."""
    require_milvus()
    if importlib.util.find_spec("milvus") is None:
        reason = "the milvus-server extra is not installed (no milvus package)"
        if REQUIRED:
            pytest.fail(f"BRIDGE_REQUIRE_MILVUS=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMilvus]:
    """The session's Milvus server (a fault test stops it and starts it again). Registered
    once, in tests/conftest.py: imported into two modules it would be two servers."""
    require_milvus_server()
    server = EmbeddedMilvus(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
