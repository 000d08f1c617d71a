"""Imported bridges in the service: the encoder check (bridge/service/encoder_ids.py) on start
and on activation, and retraining from an imported bridge of either mode: with its shape and
mode, and warm-started from its weights (a retrain's init "active", `mbridge train
--init-from`).

Imported bridges are built here in the authors' exact layouts (tests/official_mcr.py) at the
tiny towers' width (16-d) and go through `mbridge import-checkpoint`, like a user's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from media_factory import make_png_bytes, make_wav_bytes
from official_mcr import CLAPCLIP_Head, Ex_MCR_Head, randomize
from tiny_models import TINY_CLAP_DIM, TINY_CLIP_DIM

from bridge.cli import main
from bridge.errors import ConflictError, InvalidInputError
from bridge.model.config import ProjectorConfig
from bridge.model.imports import PUBLISHED_CLAP, PUBLISHED_CLIP
from bridge.model.projectors import BridgeModel, load_checkpoint, save_checkpoint
from bridge.service.encoder_ids import canonical, encoder_mismatch, same_encoder
from bridge.service.facade import BridgeService
from bridge.types import RetrainRequest, ServiceConfig, Upload

assert TINY_CLIP_DIM == TINY_CLAP_DIM  # the official heads have one width for both sides
CAPTIONS = [f"{word} number {i}" for i in range(24) for word in ("a photo of", "the sound of")]
HEADS = {"cmcr": CLAPCLIP_Head, "exmcr": Ex_MCR_Head}


def import_head(kind: str, folder: Path, *encoder_flags: str) -> Path:
    """A random head of `kind` in the released layout at 16-d, saved and imported."""
    head = randomize(HEADS[kind](TINY_CLIP_DIM), seed=3)
    source = folder / f"{kind}.pt"
    torch.save(head.state_dict(), source)
    out = folder / f"{kind}-bridge"
    args = ["import-checkpoint", "--kind", kind, "--checkpoint", str(source), "--out", str(out)]
    assert main([*args, *encoder_flags]) == 0
    return out


@pytest.fixture
def make_service(
    tmp_path: Path, tiny_clip_encoder: Any, tiny_clap_encoder: Any
) -> Iterator[Callable[..., BridgeService]]:
    opened: list[BridgeService] = []

    def make(initial_bridge: Path) -> BridgeService:
        config = ServiceConfig(
            data_dir=tmp_path / "var",
            clip_model=tiny_clip_encoder.model_id,
            clap_model=tiny_clap_encoder.model_id,
            initial_bridge=initial_bridge,
            device="cpu",
            samples_dir=None,
            max_audio_seconds=2.0,
        )
        service = BridgeService.open(config, clip=tiny_clip_encoder, clap=tiny_clap_encoder)
        opened.append(service)
        return service

    yield make
    for service in opened:
        service.close()


def tiny_flags(clip: Any, clap: Any) -> tuple[str, ...]:
    return ("--clip", clip.model_id, "--clap", clap.model_id)


@pytest.fixture
def import_for_tiny(
    tmp_path: Path, tiny_clip_encoder: Any, tiny_clap_encoder: Any
) -> Callable[[str], Path]:
    """import_head(kind) recorded for the tiny towers the test services run."""
    flags = tiny_flags(tiny_clip_encoder, tiny_clap_encoder)
    return lambda kind: import_head(kind, tmp_path, *flags)


# -- what counts as the same encoder -----------------------------------------------------


def test_same_encoder_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models" / "demo-clip"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert same_encoder("models/demo-clip", "models/demo-clip")
    assert same_encoder("models/demo-clip", str(folder))  # relative vs absolute, same folder
    assert same_encoder(str(folder) + "/", "models/demo-clip")
    monkeypatch.chdir(tmp_path / "models")  # recorded relative elsewhere: the path ends with it
    assert same_encoder("models/demo-clip", str(folder))
    assert not same_encoder("models/demo-clap", str(folder))
    # a hub id and its snapshot in the Hugging Face cache
    snapshot = tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert canonical(str(snapshot)) == PUBLISHED_CLIP
    assert same_encoder(PUBLISHED_CLIP, str(snapshot))
    assert not same_encoder("openai/clip-vit-large-patch14", str(snapshot))
    # a bare checkpoint file name matches a file of that name, or the authors' name for it
    assert same_encoder(PUBLISHED_CLAP, "/weights/630k-fusion-best.pt")
    assert same_encoder(PUBLISHED_CLAP, "checkpoints/laion_clap_fullset_fusion.pt")
    assert not same_encoder(PUBLISHED_CLAP, "/weights/630k-audioset-fusion-best.pt")
    assert not same_encoder(PUBLISHED_CLAP, "laion/clap-htsat-fused")
    assert not same_encoder(PUBLISHED_CLIP, "models/demo-clip")


def test_mismatch_names_both_and_unrecorded_encoders_pass() -> None:
    running = {"clip": "models/demo-clip", "clap": "models/demo-clap"}
    assert encoder_mismatch({}, running) is None  # older bridges record none
    assert encoder_mismatch({"clip": "models/demo-clip", "clap": ""}, running) is None
    message = encoder_mismatch({"clip": PUBLISHED_CLIP, "clap": "models/demo-clap"}, running)
    assert message is not None
    assert f"CLIP {PUBLISHED_CLIP!r}" in message and "CLIP 'models/demo-clip'" in message
    assert "CLAP" not in message.split(":")[0]  # only the kind that differs is named


def test_committed_demo_bridge_fits_the_default_encoders() -> None:
    """`make serve` defaults: models/demo-bridge with models/demo-clip and demo-clap, from the
    repository root and from elsewhere (absolute paths to the same folders)."""
    repo = Path(__file__).resolve().parents[3]
    recorded = load_checkpoint(repo / "models" / "demo-bridge").encoders
    defaults = ServiceConfig()
    assert (
        encoder_mismatch(recorded, {"clip": defaults.clip_model, "clap": defaults.clap_model})
        is None
    )
    absolute = {"clip": str(repo / defaults.clip_model), "clap": str(repo / defaults.clap_model)}
    assert encoder_mismatch(recorded, absolute) is None


# -- the service -------------------------------------------------------------------------


def test_start_refuses_an_initial_bridge_for_other_encoders(
    tmp_path: Path, make_service: Callable[..., BridgeService], tiny_clip_encoder: Any
) -> None:
    imported = import_head("cmcr", tmp_path)  # records the published pair
    with pytest.raises(ConflictError) as refused:
        make_service(imported)
    message = str(refused.value)
    assert f"CLIP {PUBLISHED_CLIP!r}" in message and f"CLAP {PUBLISHED_CLAP!r}" in message
    assert repr(tiny_clip_encoder.model_id) in message
    assert not (tmp_path / "var" / "versions" / "v1").exists()  # nothing registered


def test_bridges_recording_no_encoders_still_start(
    tmp_path: Path, make_service: Callable[..., BridgeService]
) -> None:
    config = ProjectorConfig(TINY_CLIP_DIM, TINY_CLAP_DIM, 32, 8)
    older = save_checkpoint(tmp_path / "older", BridgeModel(config), None, {"x": 1})
    assert load_checkpoint(older).encoders == {}
    service = make_service(older)
    assert service.readiness()["active_version"] == "v1"


def test_activate_refuses_a_version_for_other_encoders(
    tmp_path: Path,
    make_service: Callable[..., BridgeService],
    tiny_clip_encoder: Any,
    tiny_clap_encoder: Any,
) -> None:
    """A ready version recorded for other encoders (e.g. a data dir moved to new encoders of
    the same width) is refused with a 409 naming both; the active version stays."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    fitting = import_head("cmcr", tmp_path, *tiny_flags(tiny_clip_encoder, tiny_clap_encoder))
    service = make_service(fitting)
    foreign = import_head("exmcr", tmp_path)  # records the published pair
    dest = service.layout.checkpoint_dir("v2")
    dest.parent.mkdir(parents=True)
    shutil.copytree(foreign, dest)
    sha = load_checkpoint(dest).sha256
    service.store.add_version("v2", service.layout.checkpoint_ref("v2"), "ready", sha, {})

    with pytest.raises(ConflictError, match="was made for CLIP 'openai/clip-vit-base-patch32'"):
        service.activate("v2")
    admin = "k" * 32
    settings = Settings(admin_key=admin, data_dir=tmp_path / "var", seed_samples=False)
    with TestClient(create_app(settings, service=service)) as client:
        r = client.post(
            "/v1/admin/activate",
            json={"version": "v2"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert PUBLISHED_CLIP in detail and PUBLISHED_CLAP in detail
        assert tiny_clip_encoder.model_id in detail and tiny_clap_encoder.model_id in detail
    assert service.readiness()["active_version"] == "v1"


@pytest.mark.parametrize("kind", ["cmcr", "exmcr"])
def test_retrain_from_an_imported_bridge_keeps_its_mode(
    kind: str,
    tmp_path: Path,
    make_service: Callable[..., BridgeService],
    import_for_tiny: Callable[[str], Path],
) -> None:
    imported = import_for_tiny(kind)
    service = make_service(imported)
    assert service.readiness()["active_mode"] == kind
    uploads = [Upload(make_png_bytes(36, 36, seed=i), f"{i}.png", "image/png") for i in range(4)]
    uploads += [Upload(make_wav_bytes(0.4, 16000, 220.0 * (i + 1)), f"{i}.wav", "audio/wav")
                for i in range(4)]  # fmt: skip
    service.add_items(uploads, [{} for _ in uploads])

    result = service.retrain(
        RetrainRequest(
            captions=CAPTIONS, train_overrides={"epochs": 1, "batch_size": 16}, activate=True
        ),
        lambda *args, **kwargs: None,
    )
    assert result["version"] == "v2" and result["metrics"]["mode"] == kind
    retrained = load_checkpoint(service.layout.checkpoint_dir("v2"))
    assert retrained.projector_config == load_checkpoint(imported).projector_config
    assert retrained.encoders == load_checkpoint(imported).encoders  # the same encoders
    ready = service.readiness()
    assert (ready["active_version"], ready["active_mode"]) == ("v2", kind)
    vectors = np.random.default_rng(0).standard_normal((3, TINY_CLAP_DIM)).astype(np.float32)
    assert retrained.project("clap", vectors).shape == (3, retrained.projector_config.shared_dim)


# -- warm start: retraining from an imported bridge's weights ------------------------------

ADMIN_KEY = "k" * 32
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# One optimisation step with a tiny learning rate: a warm-started version can differ from its
# start only by that step and by the BatchNorm statistics moving 10% towards the batch's.
TINY_STEP = {"epochs": 1, "batch_size": 256, "lr": 1e-7, "seed": 5}


def _admin_client(service: BridgeService, data_dir: Path) -> Any:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(admin_key=ADMIN_KEY, data_dir=data_dir, seed_samples=False)
    return TestClient(create_app(settings, service=service))


def _retrain_over_http(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/admin/retrain and wait for the job to end; the finished job."""
    import time

    r = client.post("/v1/admin/retrain", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/admin/jobs/{r.json()['job_id']}", headers=ADMIN).json()
        if job["status"] in ("succeeded", "failed"):
            assert job["status"] == "succeeded", job["error"]
            return dict(job)
        time.sleep(0.1)
    raise AssertionError("the retrain job did not end in 120 s")


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of a with row i of b (both L2-normalised by project)."""
    return np.sum(a * b, axis=1)


def _add_media(service: BridgeService) -> None:
    uploads = [Upload(make_png_bytes(36, 36, seed=i), f"{i}.png", "image/png") for i in range(4)]
    uploads += [Upload(make_wav_bytes(0.4, 16000, 220.0 * (i + 1)), f"{i}.wav", "audio/wav")
                for i in range(4)]  # fmt: skip
    service.add_items(uploads, [{} for _ in uploads])


@pytest.mark.parametrize("kind", ["cmcr", "exmcr"])
def test_admin_retrain_warm_starts_from_an_imported_bridge(
    kind: str,
    tmp_path: Path,
    make_service: Callable[..., BridgeService],
    import_for_tiny: Callable[[str], Path],
) -> None:
    """`init: "active"` over HTTP: the new version starts from the imported weights, so after
    one tiny step its projections are the imported bridge's up to a small drift, while the
    same retrain from fresh weights maps the same inputs elsewhere; metrics, the job's
    parameters and the version's report.json record the start."""
    imported = import_for_tiny(kind)
    service = make_service(imported)
    _add_media(service)
    body = {"captions": CAPTIONS, "train_overrides": TINY_STEP}
    with _admin_client(service, tmp_path / "var") as client:
        warm = _retrain_over_http(client, {**body, "init": "active", "activate": True})
        fresh = _retrain_over_http(client, body)  # v3, from fresh weights (v2 is active now)
        ready = client.get("/readyz").json()["engine"]
    source = load_checkpoint(imported)
    assert (warm["version"], fresh["version"]) == ("v2", "v3")
    assert warm["metrics"]["init"] == {"from": "v1", "sha256": source.sha256}
    assert fresh["metrics"]["init"] == {"from": "fresh"}
    assert load_checkpoint(service.layout.checkpoint_dir("v2")).report["init"] == {
        "from": "v1",
        "sha256": source.sha256,
    }
    (record,) = [v for v in service.list_versions() if v.version == "v2"]
    assert record.metrics["init"]["from"] == "v1"
    assert (ready["active_version"], ready["active_mode"]) == ("v2", kind)

    rng = np.random.default_rng(1)
    spaces = ("clap", "clip") if kind == "cmcr" else ("clap",)  # Ex-MCR's clip only normalises
    versions = {v: load_checkpoint(service.layout.checkpoint_dir(v)) for v in ("v2", "v3")}
    for space in spaces:
        vectors = rng.standard_normal((64, TINY_CLAP_DIM)).astype(np.float32)
        start = source.project(space, vectors)
        warm_cos = _row_cosines(start, versions["v2"].project(space, vectors))
        fresh_cos = _row_cosines(start, versions["v3"].project(space, vectors))
        # measured: warm >= 0.991 in every row, fresh 0.28 / -0.09 (cmcr clap / clip), 0.16
        # (exmcr) on average
        assert warm_cos.min() > 0.98, (space, warm_cos.min())
        assert fresh_cos.mean() < 0.6, (space, fresh_cos.mean())


@pytest.mark.parametrize(
    ("kind", "request_fields", "named"),
    [
        ("cmcr", {"train_overrides": {"hidden_dim": 8}}, "hidden_dim 8 (v1 has 32)"),
        ("cmcr", {"train_overrides": {"num_layers": 3}}, "num_layers 3 (v1 has 2)"),
        ("cmcr", {"train_overrides": {"mode": "exmcr"}}, "mode 'exmcr' (v1 has 'cmcr')"),
        ("cmcr", {"train_overrides": {"batchnorm_mode": "separate"}}, "Drop batchnorm_mode"),
        ("exmcr", {"train_overrides": {"mode": "cmcr"}}, "mode 'cmcr' (v1 has 'exmcr')"),
        ("exmcr", {"train_overrides": {"hidden_dim": 8, "epochs": 1}}, "hidden_dim 8 (v1 has 32)"),
    ],
)
@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_a_warm_start_that_would_change_the_projector_is_a_422_before_any_job(
    kind: str,
    request_fields: dict[str, Any],
    named: str,
    encoding: str,
    tmp_path: Path,
    make_service: Callable[..., BridgeService],
    import_for_tiny: Callable[[str], Path],
) -> None:
    import json

    imported = import_for_tiny(kind)
    service = make_service(imported)
    with _admin_client(service, tmp_path / "var") as client:
        if encoding == "json":
            body = {"captions": CAPTIONS, "init": "active", **request_fields}
            r = client.post("/v1/admin/retrain", json=body, headers=ADMIN)
        else:
            form = {
                "init": "active",
                "train_overrides": json.dumps(request_fields["train_overrides"]),
            }
            files = {"captions": ("c.txt", "\n".join(CAPTIONS).encode(), "text/plain")}
            r = client.post("/v1/admin/retrain", data=form, files=files, headers=ADMIN)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "init 'active' starts from v1's weights" in detail and named in detail, detail
        assert "init 'fresh'" in detail  # says the way out
        versions = client.get("/v1/admin/versions", headers=ADMIN).json()
    assert [v["version"] for v in versions["versions"]] == ["v1"]
    assert service.readiness()["job_running"] is False
    uploads = tmp_path / "var" / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    # the same overrides from fresh weights are a valid request (the conflict is the start's)
    with _admin_client(service, tmp_path / "var") as client:
        body = {"captions": CAPTIONS, **request_fields}
        body["train_overrides"] = {**body["train_overrides"], **TINY_STEP}
        if body["train_overrides"].get("mode") == "cmcr":
            body["train_overrides"]["shared_dim"] = 16
        _retrain_over_http(client, body)


def test_init_values_and_a_warm_start_without_an_active_version(
    tmp_path: Path,
    make_service: Callable[..., BridgeService],
    import_for_tiny: Callable[[str], Path],
) -> None:
    imported = import_for_tiny("cmcr")
    service = make_service(imported)
    with _admin_client(service, tmp_path / "var") as client:
        r = client.post(
            "/v1/admin/retrain", json={"captions": CAPTIONS, "init": "warm"}, headers=ADMIN
        )
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.init", r.text
    with pytest.raises(InvalidInputError, match="init must be one of"):
        service.start_retrain(RetrainRequest(captions=CAPTIONS, init="v1"))  # type: ignore[arg-type]
    service.close()
    shutil.rmtree(tmp_path / "var")
    empty = make_service(None)  # no initial bridge: no version to start from
    with pytest.raises(InvalidInputError, match="needs an active bridge version"):
        empty.start_retrain(RetrainRequest(captions=CAPTIONS, init="active"))
    assert empty.list_versions() == []


@pytest.mark.parametrize(("kind", "conflict"), [("cmcr", "--hidden-dim"), ("exmcr", "--layers")])
def test_mbridge_train_init_from_an_imported_bridge(
    kind: str, conflict: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mbridge train --init-from DIR`: shape, mode and encoders come from the bridge, the
    report records the start, one tiny step stays close to it; a flag that changes the
    shape is refused with one line and writes nothing."""
    imported = import_head(kind, tmp_path)  # records the published encoders
    rng = np.random.default_rng(2)
    for name in ("clip", "clap"):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((48, 16)).astype(np.float32))
    out = tmp_path / "warm"
    argv = ["train", "--clip-text", str(tmp_path / "clip.npy"), "--clap-text"]
    argv += [str(tmp_path / "clap.npy"), "--out", str(out), "--init-from", str(imported)]
    argv += ["--epochs", "1", "--batch-size", "256", "--lr", "1e-7", "--device", "cpu", "--quiet"]
    assert main([*argv, conflict, "8"]) == 2
    err = capsys.readouterr().err
    assert f"a warm start from {imported} keeps its projector" in err and " 8 (" in err, err
    assert not out.exists()

    assert main(argv) == 0
    source, trained = load_checkpoint(imported), load_checkpoint(out)
    assert trained.report["init"] == {"from": str(imported), "sha256": source.sha256}
    assert trained.projector_config == source.projector_config
    assert trained.encoders == source.encoders == {"clip": PUBLISHED_CLIP, "clap": PUBLISHED_CLAP}
    vectors = rng.standard_normal((64, 16)).astype(np.float32)
    cosines = _row_cosines(source.project("clap", vectors), trained.project("clap", vectors))
    assert cosines.min() > 0.98, cosines.min()


def test_a_warm_start_keeps_the_text_batchnorms_of_its_start(
    tmp_path: Path,
    make_service: Callable[..., BridgeService],
    tiny_clip_encoder: Any,
    tiny_clap_encoder: Any,
) -> None:
    """A bridge trained with batchnorm_mode 'separate' has text BatchNorms of its own: a warm
    start from it trains them too (no override needed), and 'joint' is refused."""
    config = ProjectorConfig(TINY_CLIP_DIM, TINY_CLAP_DIM, 32, 8, text_norms=True)
    encoders = {"clip": tiny_clip_encoder.model_id, "clap": tiny_clap_encoder.model_id}
    start = save_checkpoint(tmp_path / "sep", BridgeModel(config), None, {}, encoders)
    service = make_service(start)
    with pytest.raises(InvalidInputError, match="batchnorm_mode"):
        service.start_retrain(
            RetrainRequest(
                captions=CAPTIONS, train_overrides={"batchnorm_mode": "joint"}, init="active"
            )
        )
    request = RetrainRequest(captions=CAPTIONS, train_overrides=TINY_STEP, init="active")
    result = service.retrain(request, lambda *args, **kwargs: None)
    trained = load_checkpoint(service.layout.checkpoint_dir(result["version"]))
    assert trained.projector_config == config
    assert trained.train_config is not None and trained.train_config.batchnorm_mode == "separate"
    assert result["metrics"]["init"]["from"] == "v1"
