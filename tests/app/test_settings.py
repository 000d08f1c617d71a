"""Settings from BRIDGE_* variables, the non-loopback refusal, and `python -m app`."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.auth import keys_match
from app.settings import (
    ENGINE_ONLY,
    Settings,
    bind_refusal,
    fed_fields,
    format_validation_error,
    is_loopback_host,
)
from bridge.errors import InvalidInputError
from bridge.model.devices import resolve_device
from bridge.types import DEVICE_NAMES, ServiceConfig

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_the_issue() -> None:
    s = Settings()
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.data_dir == Path("var")
    assert (s.clip_model, s.clap_model) == ("models/demo-clip", "models/demo-clap")
    assert s.initial_bridge == Path("models/demo-bridge")
    assert (s.device, s.index_type, s.faiss_gpu) == ("auto", "flat", True)
    assert s.admin_key is None and s.api_key is None
    assert s.max_upload_bytes == 20_000_000 and s.max_audio_seconds == 30.0
    assert s.seed_samples is True and s.samples_dir == Path("models/samples")
    config = s.service_config()
    assert config.samples_dir == Path("models/samples") and config.index_type == "flat"


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_PORT", "9100")
    monkeypatch.setenv("BRIDGE_INDEX_TYPE", "hnsw")
    monkeypatch.setenv("BRIDGE_SEED_SAMPLES", "false")
    monkeypatch.setenv("BRIDGE_INITIAL_BRIDGE", "none")
    monkeypatch.setenv("BRIDGE_ADMIN_KEY", "  ")
    monkeypatch.setenv("BRIDGE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("BRIDGE_FAISS_THREADS", "3")
    monkeypatch.setenv("BRIDGE_SEARCH_THREADS", "1")
    s = Settings()
    assert s.port == 9100 and s.index_type == "hnsw" and s.log_level == "debug"
    assert s.service_config().faiss_threads == 3 and s.service_config().search_threads == 1
    assert s.initial_bridge is None and s.admin_key is None
    assert s.service_config().samples_dir is None
    assert s.service_config().initial_bridge is None


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


def test_every_service_config_field_is_fed_by_the_setting_of_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each ServiceConfig field is a setting of the same name with the same default, or is
    named in ENGINE_ONLY (and then is no setting)."""
    _clean_environment(monkeypatch)
    engine = {f.name for f in dataclasses.fields(ServiceConfig)}
    assert set(ENGINE_ONLY) <= engine and not set(ENGINE_ONLY) & set(Settings.model_fields)
    assert set(fed_fields()) == engine - set(ENGINE_ONLY)
    assert set(fed_fields()) <= set(Settings.model_fields)
    assert Settings().service_config() == ServiceConfig()  # the defaults are ServiceConfig's


def test_each_engine_setting_reaches_the_service_config(tmp_path: Path) -> None:
    """A value other than the default in every fed setting arrives in ServiceConfig."""
    given: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "clip_model": "org/clip",
        "clap_model": "org/clap",
        "initial_bridge": tmp_path / "bridge",
        "device": "cpu",
        "index_type": "ivf",
        "faiss_gpu": False,
        "backend": "milvus",
        "milvus_uri": "http://milvus:19530",
        "milvus_token": "user:secret",
        "milvus_db": "bridge",
        "milvus_timeout": 3.5,
        "database_url": "postgresql://bridge:secret@db:5432/bridge",
        "store_busy_timeout": 2.5,
        "max_audio_seconds": 7.5,
        "samples_dir": tmp_path / "samples",
        "encode_threads": 5,
        "faiss_threads": 6,
        "search_threads": 7,
        "keep_previous_seconds": 30.0,
    }
    assert set(given) == set(fed_fields())
    defaults = ServiceConfig()
    assert all(getattr(defaults, name) != value for name, value in given.items())
    config = Settings(**given).service_config()
    assert {name: getattr(config, name) for name in given} == given
    assert Settings(**given, seed_samples=False).service_config().samples_dir is None


# Accepted spellings, names of devices this service does not know, and near misses.
DEVICE_SPELLINGS = [
    "auto", "cpu", " CPU ", "cuda", "CUDA", "cuda:0", "cuda:3", "mps", "MPS",
    "gpu", "tpu", "xla", "", "cuda:", "cuda:x", "cuda:-1", "cuda:\u00b2", "cudax", "cpu:0",
    "mps:0", "metal",
]  # fmt: skip


def _resolver_knows(spelling: str) -> bool:
    """Whether resolve_device takes `spelling` for a device name: it resolves, or refuses only
    because this machine lacks that device."""
    try:
        resolve_device(spelling)
    except InvalidInputError as exc:
        return "requested but torch sees" in str(exc)
    return True


@pytest.mark.parametrize("spelling", DEVICE_SPELLINGS)
def test_settings_accept_exactly_the_devices_the_resolver_knows(spelling: str) -> None:
    """BRIDGE_DEVICE=mps passed the settings check and then failed in the engine's resolver.
    Both now read one list (bridge/types.py), so each spelling is taken by both or by neither."""
    try:
        device = Settings(device=spelling).device
    except ValidationError:
        settings_take_it = False
    else:
        assert _resolver_knows(device)  # the canonical spelling the engine receives
        settings_take_it = True
    assert _resolver_knows(spelling) == settings_take_it


@pytest.mark.parametrize("spelling", ["gpu", "cuda:x", "mps:0"])
def test_settings_and_the_resolver_refuse_a_device_in_the_same_words(spelling: str) -> None:
    with pytest.raises(ValidationError, match=f"expected {DEVICE_NAMES}, got {spelling!r}"):
        Settings(device=spelling)
    with pytest.raises(InvalidInputError, match=f"must be {DEVICE_NAMES}, got {spelling!r}"):
        resolve_device(spelling)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("BRIDGE_PORT", "70000", "less than or equal to 65535"),
        ("BRIDGE_PORT", "http", "valid integer"),
        ("BRIDGE_INDEX_TYPE", "annoy", "'flat', 'hnsw' or 'ivf'"),
        ("BRIDGE_DEVICE", "tpu", "auto, cpu, cuda"),
        ("BRIDGE_WORKERS", "0", "at least 1"),
        ("BRIDGE_CORS_ORIGINS", "app.example.com", "not origins"),
        ("BRIDGE_MAX_UPLOAD_BYTES", "0", "greater than 0"),
        ("BRIDGE_FAISS_GPU", "maybe", "valid boolean"),
        ("BRIDGE_SEARCH_THREADS", "-1", "greater than or equal to 0"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = format_validation_error(caught.value)
    assert f"{name}: " in message and words in message and repr(value) in message


@pytest.mark.parametrize(
    "env",
    [
        {},  # FAISS: the indexes live in one process
        {"BRIDGE_BACKEND": "milvus"},  # Milvus Lite: one process too
        {"BRIDGE_BACKEND": "milvus", "BRIDGE_MILVUS_URI": "/tmp/x/milvus.db"},
    ],
)
def test_workers_above_one_need_a_milvus_server(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for key, value in {"BRIDGE_WORKERS": "2", **env}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = format_validation_error(caught.value)
    assert "BRIDGE_WORKERS=2 needs the indexes on a Milvus server" in message


def test_workers_serve_as_replicas_on_a_milvus_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_WORKERS", "3")
    monkeypatch.setenv("BRIDGE_BACKEND", "milvus")
    monkeypatch.setenv("BRIDGE_MILVUS_URI", "http://milvus:19530")
    assert Settings().workers == 3


def test_keys_never_appear_in_error_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_PORT", "0")
    monkeypatch.setenv("BRIDGE_ADMIN_KEY", "super-secret-value")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "super-secret-value" not in format_validation_error(caught.value)
    assert "super-secret-value" not in repr(Settings(port=1, admin_key="super-secret-value"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_bind_refusal() -> None:
    assert bind_refusal(Settings(host="127.0.0.1")) is None
    assert bind_refusal(Settings(host="0.0.0.0", admin_key="k" * 32)) is None
    message = bind_refusal(Settings(host="0.0.0.0"))
    assert message is not None and "BRIDGE_ADMIN_KEY" in message and "0.0.0.0" in message


def test_keys_match_is_exact() -> None:
    assert keys_match("abc", "abc")
    assert not keys_match("abc", "abd") and not keys_match("ab", "abc")
    assert keys_match("ключ", "ключ")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_app(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_app_refuses_a_public_host_without_admin_key() -> None:
    done = _run_app({"BRIDGE_HOST": "0.0.0.0", "BRIDGE_PORT": "1"})
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "BRIDGE_ADMIN_KEY" in done.stderr


def test_python_m_app_exits_2_on_invalid_settings() -> None:
    done = _run_app({"BRIDGE_PORT": "99999"})
    assert done.returncode == 2
    assert "BRIDGE_PORT" in done.stderr


def test_python_m_app_exits_1_when_the_engine_cannot_load(tmp_path: Path) -> None:
    done = _run_app(
        {
            "BRIDGE_PORT": str(_free_port()),
            "BRIDGE_DATA_DIR": str(tmp_path / "data"),
            "BRIDGE_CLIP_MODEL": str(tmp_path / "no-such-model"),
            "BRIDGE_LOG_LEVEL": "critical",
            "HF_HUB_OFFLINE": "1",
        }
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "the engine failed to start" in done.stderr and "no-such-model" in done.stderr


def test_python_m_app_help_lists_the_variables() -> None:
    done = _run_app({}, "--help")
    assert done.returncode == 0
    for name in ("BRIDGE_HOST", "BRIDGE_ADMIN_KEY", "BRIDGE_MAX_UPLOAD_BYTES"):
        assert name in done.stdout


@pytest.mark.parametrize(("given", "want"), [(None, "1"), ("3", "3")])
def test_python_m_app_gives_numpy_one_openblas_thread_unless_told(
    given: str | None, want: str
) -> None:
    """Set before anything imports NumPy (OpenBLAS reads it once); a user's value wins."""
    code = (
        "import sys; assert 'numpy' not in sys.modules; import app.__main__, os; "
        "print(os.environ['OPENBLAS_NUM_THREADS'])"
    )
    done = _python(code, {"OPENBLAS_NUM_THREADS": given})
    assert done.stdout.strip() == want


def _python(code: str, env_vars: dict[str, str | None] | None = None) -> Any:
    """``python -c code`` in the repository; ``env_vars``: set (None: unset) over ours."""
    env = dict(os.environ)
    for name, value in (env_vars or {}).items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.parametrize(("given", "want"), [(None, "1"), ("0", "0")])
def test_no_progress_bars_in_a_log_unless_told(given: str | None, want: str) -> None:
    """stderr here is a pipe, as in a container log: hub and weight-loading bars are off."""
    code = (
        "import sys; assert 'huggingface_hub' not in sys.modules; import app.__main__, os; "
        "from huggingface_hub.utils import are_progress_bars_disabled as off; "
        "print(os.environ['HF_HUB_DISABLE_PROGRESS_BARS'], off())"
    )
    done = _python(code, {"HF_HUB_DISABLE_PROGRESS_BARS": given})
    assert done.stdout.split() == [want, str(want == "1")]


@pytest.mark.parametrize(("level", "faiss_shown"), [("info", False), ("debug", True)])
def test_faiss_loader_noise_is_hidden_unless_debugging(level: str, faiss_shown: bool) -> None:
    """The service's start-up log has no "Could not load library with AVX512 support" lines
    (FAISS 1.15's loader logs them on every import) but says which SIMD level FAISS uses."""
    code = (
        "import logging, app.__main__ as m; "
        f"m.configure_logging({level!r}); "
        "import faiss; from bridge.index.vectors import faiss_summary; "
        "logging.getLogger('bridge').info(faiss_summary())"
    )
    done = _python(code)
    assert ("faiss.loader" in done.stderr) is faiss_shown, done.stderr
    assert re.search(r"faiss \d+\.\d+\.\d+, SIMD level \w+, \d+ GPU\(s\)", done.stderr)
