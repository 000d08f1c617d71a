"""What the Milvus tests need: pymilvus and Milvus Lite (the `milvus` extra), and for the
end-to-end tests a real Milvus server (the `milvus-server` extra's embedded standalone
server). `make test` installs both. Without them the tests skip, unless
BRIDGE_REQUIRE_MILVUS=1 (CI), which makes a missing extra a failure instead of a silent
skip."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

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


class MilvusServer:
    """A real Milvus standalone server (the `milvus` package's embedded one: etcd and local
    storage in `base_dir`) on a fixed free loopback port, so that a restart keeps the URI.
    Its embedded etcd binds fixed ports (2379-2380), so one runs per machine at a time: the
    tests share the session's `milvus_server`."""

    def __init__(self, base_dir: Path, port: int) -> None:
        from milvus import MilvusServer as Embedded

        self._server = Embedded()
        self._server.set_base_dir(str(base_dir))
        # A fixed port, checked with SO_REUSEADDR as Milvus binds it: the package's own check
        # fails on the old server's TIME_WAIT connections and moves a restart to another port.
        self._server.config.configs["proxy_port"] = port
        self._server.config.try_bind_port = _bind_reusable
        self.uri = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self._server.start()  # waits for the server's health check

    def stop(self) -> None:
        self._server.stop()

    @property
    def running(self) -> bool:
        return bool(self._server.running)


def _bind_reusable(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


def require_milvus_server() -> None:
    """Skip (or fail under BRIDGE_REQUIRE_MILVUS=1) without the milvus-server extra."""
    require_milvus()
    if importlib.util.find_spec("milvus") is None:
        reason = "the milvus-server extra is not installed (no milvus package)"
        if REQUIRED:
            pytest.fail(f"BRIDGE_REQUIRE_MILVUS=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """The session's Milvus server (a fault test stops it and starts it again). Registered
    once, in tests/conftest.py: imported into two modules it would be two servers."""
    require_milvus_server()
    from server_env import free_port

    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
