"""A real Milvus standalone server without docker, for development, tests and benchmarks.

The `milvus` package (the `milvus-server` extra) ships Milvus 2.3 standalone with embedded
etcd and local storage; `EmbeddedMilvus` starts it in a base directory on a fixed loopback
port, so that a restart keeps its URI and its collections. Its embedded etcd binds fixed
ports (2379-2380), so only one runs per machine at a time. Production deployments run the
Milvus images instead (docs/deployment.md).
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

from bridge.errors import InvalidInputError


def available() -> bool:
    """Whether the `milvus` package is installed."""
    return importlib.util.find_spec("milvus") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bind_reusable(port: int) -> socket.socket | None:
    """The package's port check, with SO_REUSEADDR as Milvus binds the port: without it the
    old server's TIME_WAIT connections fail the check and a restart moves to another port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


class EmbeddedMilvus:
    """Milvus standalone in `base_dir`, listening on 127.0.0.1:`port` (a free one if 0)."""

    def __init__(self, base_dir: Path, port: int = 0) -> None:
        if not available():
            raise InvalidInputError(
                "an embedded Milvus server needs the milvus package: "
                "pip install 'modality-bridge[milvus-server]'"
            )
        from milvus import MilvusServer

        self.port = port or free_port()
        self._server = MilvusServer()
        self._server.set_base_dir(str(base_dir))
        self._server.config.configs["proxy_port"] = self.port
        self._server.config.try_bind_port = _bind_reusable
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it answers its health check (about 10 s)."""
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def running(self) -> bool:
        return bool(self._server.running)

    def __enter__(self) -> EmbeddedMilvus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
