"""Fixtures of the API tests: a real BridgeService on the tiny seeded CLIP/CLAP models, a
small trained bridge, and TestClients of create_app() with chosen settings.

Each test gets a fresh data dir (so "nothing was stored" is checkable); the encoders and the
bridge checkpoint are built once per session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bridge.encode.encoders import Encoder
    from bridge.service.facade import BridgeService

from apikit import ADMIN_KEY, train_tiny_bridge
from milvus_kit import require_milvus


@pytest.fixture(scope="session")
def tiny_bridge_dir(
    tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return train_tiny_bridge(
        tiny_clip_encoder, tiny_clap_encoder, tmp_path_factory.mktemp("bridge") / "ckpt"
    )


@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test, never from the caller's BRIDGE_* environment."""
    for name in list(os.environ):
        if name.upper().startswith("BRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest) -> str:
    """The vector backend the API runs on: every API test runs against both (Milvus Lite, a
    real embedded Milvus, in a file of the test's data dir)."""
    name: str = request.param
    if name == "milvus":
        require_milvus()
    return name


@pytest.fixture
def make_settings(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    tiny_bridge_dir: Path,
    backend: str,
) -> Callable[..., Any]:
    """make_settings(**overrides) -> app.settings.Settings on this test's data dir."""
    from app.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "clip_model": str(tiny_clip_dir),
            "clap_model": str(tiny_clap_dir),
            "initial_bridge": tiny_bridge_dir,
            "device": "cpu",
            "faiss_gpu": False,
            "seed_samples": False,
            "admin_key": ADMIN_KEY,
            "max_audio_seconds": 5.0,
            "backend": backend,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
def service(
    make_settings: Callable[..., Any], tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder
) -> Iterator[BridgeService]:
    """A real engine on a fresh data dir (session encoders reused), closed after the test."""
    from bridge.service.facade import BridgeService

    svc = BridgeService.open(
        make_settings().service_config(), clip=tiny_clip_encoder, clap=tiny_clap_encoder
    )
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def open_client() -> Iterator[Callable[[FastAPI], TestClient]]:
    """open_client(app) -> a started TestClient (lifespan run) over `app`, closed after the test."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(TestClient(app))


@pytest.fixture
def make_client(
    service: BridgeService,
    make_settings: Callable[..., Any],
    open_client: Callable[[FastAPI], TestClient],
) -> Callable[..., TestClient]:
    """make_client(**settings_overrides) -> TestClient over create_app(settings, service)."""
    from app.main import create_app

    return lambda **overrides: open_client(create_app(make_settings(**overrides), service=service))


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """Default settings: admin key set, no API key, 20 MB uploads."""
    return make_client()
