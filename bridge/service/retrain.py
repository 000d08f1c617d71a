"""The retrain pipeline: one object owns the whole path from a request to a served version.

    plan      check the request (bridge/service/retrain_plan.py) and name the next version
    run       register the version as "training" in the store
              -> captions through both text towers (bridge/encode/pair.py)
              -> memories: the given .npy files, else the stored items' raw embeddings
              -> train_bridge (bridge/model/trainer.py) writes versions/<v>/checkpoint/,
                 from fresh weights or (init "active") from the active version's
              -> re-project every stored item into the version's shared indexes and make
                 them live (bridge/service/versions.py -> catalog.py; an Ex-MCR version,
                 train_overrides {"mode": "exmcr"}, re-projects only the audio: its images
                 stay in the native clip_image index)
              -> evaluate (bridge/service/evaluation.py) -> version "ready"
              -> activate, when the request asked (one atomic swap)
              a failure anywhere: the version is unloaded, marked failed with the message,
              and its folder removed; only a "ready" version can ever become active.

The admin route runs it in the background through the job runner (BridgeService.start_retrain);
`mbridge retrain` runs the same pipeline in the foreground (BridgeService.retrain). When the
store holds no item of a modality and no memory file is given, that memory is None and
train_bridge lets the caption embeddings of the same space stand in (recorded in the metrics
as the memory source).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.arrays import load_matrix
from bridge.io import atomic_write_text
from bridge.memory import release_free_memory
from bridge.service.evaluation import evaluate_checkpoint, stored_dev_set
from bridge.service.retrain_plan import RetrainPlan, holdout_split, plan_retrain
from bridge.storage.layout import CAPTIONS_FILE, DataLayout
from bridge.telemetry import StageTimer
from bridge.types import RetrainRequest

if TYPE_CHECKING:
    from bridge.encode.pair import EncoderPair
    from bridge.model.trainer import TrainResult
    from bridge.model.validation import DevSet
    from bridge.service.versions import Versions
    from bridge.storage.items import ItemStore

logger = logging.getLogger(__name__)

# (fraction 0..1 of the whole retrain, message, force): JobContext.progress has this shape.
RetrainProgress = Callable[..., None]


@dataclass(frozen=True)
class RetrainPipeline:
    """Plan, run and clean up retrains of one data directory (module docstring)."""

    layout: DataLayout
    store: ItemStore
    towers: EncoderPair
    versions: Versions
    device: str

    def plan(self, request: RetrainRequest) -> RetrainPlan:
        """Check the request (4xx errors) and name the version it will train. A warm start
        (init "active") takes a copy of the active version's weights now, so that an
        activation while the job waits or runs does not change where it starts."""
        active = self.versions.active
        plan = plan_retrain(
            request,
            self.layout,
            self.versions.next_version(),
            active.checkpoint.projector_config if active else None,
            self.device,
            self.towers.dims(),
            active.version if active else None,
        )
        if plan.init_from is None or active is None:
            return plan
        from bridge.model.trainer import InitialWeights

        init = InitialWeights.from_checkpoint(active.checkpoint, active.version)
        return dataclasses.replace(plan, init=init)

    def run(self, plan: RetrainPlan, progress: RetrainProgress) -> dict[str, Any]:
        """The whole retrain (module docstring); returns {"version", "metrics"}. On failure
        the version is unloaded, marked failed and its folder removed before the error
        propagates. Uploaded inputs are removed at the end whatever happens (the corpus
        stays in the checkpoint)."""
        try:
            self.store.add_version(
                plan.version,
                self.layout.checkpoint_ref(plan.version),
                "training",
                None,
                {"mode": plan.mode},
            )
            return self._train_and_install(plan, progress)
        except BaseException as exc:
            self.versions.fail_training(plan.version, exc)
            raise
        finally:
            if plan.inputs_dir is not None:
                shutil.rmtree(plan.inputs_dir, ignore_errors=True)
            # Training's tensors, the memories and the re-projection are freed by now, but
            # the heap keeps their pages (about 100 MB at 20,000 items) until trimmed.
            release_free_memory()

    def _train_and_install(self, plan: RetrainPlan, progress: RetrainProgress) -> dict[str, Any]:
        timer = StageTimer()
        progress(0.01, "encoding captions", force=True)
        with timer.stage("encode"):
            clip_text, clap_text = self.towers.encode_captions(plan.captions)
        # Stored items with a `label`: measured every epoch (val_dev_p_at_1) and after training.
        labelled = stored_dev_set(self.store)
        train_idx, eval_idx = holdout_split(len(plan.captions), plan.train_config.seed)
        progress(0.05, "training", force=True)
        checkpoint_dir = self.layout.checkpoint_dir(plan.version)
        with timer.stage("train"):
            result, memory_source = self._train(
                plan,
                clip_text[train_idx],
                clap_text[train_idx],
                labelled[0],
                checkpoint_dir,
                progress,
            )
        # The memories are gone with _train's frame; give their pages back before the
        # re-projection builds a second copy of every shared index.
        release_free_memory()
        lines = (" ".join(caption.splitlines()) for caption in plan.captions)
        atomic_write_text(checkpoint_dir / CAPTIONS_FILE, "\n".join(lines) + "\n")
        progress(0.8, "re-projecting stored items", force=True)
        with timer.stage("reproject"):
            checkpoint = self.versions.install(plan.version, checkpoint_dir, progress)
        progress(0.95, "evaluating", force=True)
        with timer.stage("evaluate"):
            held_out = (clip_text[eval_idx], clap_text[eval_idx])
            metrics = evaluate_checkpoint(checkpoint, held_out, labelled)
        metrics["train"] = {
            "final": result.report.get("final", {}),
            "selected_epoch": result.report.get("selected_epoch", {}),
            "data": result.report.get("data", {}),
            "wall_seconds": result.report.get("wall_seconds"),
        }
        metrics["mode"] = checkpoint.projector_config.mode
        metrics["init"] = result.report.get("init", {"from": "fresh"})
        metrics["memory_source"] = memory_source
        metrics["warnings"] = result.report.get("warnings", [])
        in_sample = len(eval_idx) == len(plan.captions)
        metrics["held_out_captions"] = 0 if in_sample else int(len(eval_idx))
        metrics["timings_s"] = {k: v / 1000.0 for k, v in timer.timings_ms.items()}
        self.store.update_version(
            plan.version, status="ready", sha256=checkpoint.sha256, metrics=metrics
        )
        if plan.activate:
            progress(0.99, "activating", force=True)
            self.versions.activate(plan.version)
        return {"version": plan.version, "metrics": metrics}

    def _train(
        self,
        plan: RetrainPlan,
        clip_text: np.ndarray,
        clap_text: np.ndarray,
        dev: DevSet | None,
        out_dir: Path,
        progress: RetrainProgress,
    ) -> tuple[TrainResult, dict[str, str]]:
        """train_bridge on the memories (read here, so that they are freed on return):
        (its result, where each memory came from)."""
        from bridge.model.trainer import train_bridge

        image_memory, audio_memory, memory_source = self._memories(plan)

        def on_epoch(fraction: float, message: str) -> None:
            progress(0.05 + 0.75 * fraction, message)

        result = train_bridge(
            clip_text,
            clap_text,
            image_memory=image_memory,
            audio_memory=audio_memory,
            config=plan.train_config,
            projector=plan.projector,
            out_dir=out_dir,
            progress_callback=on_epoch,
            encoders=self.towers.encoder_ids(),
            dev=dev,
            init=plan.init,
        )
        return result, memory_source

    def _memories(
        self, plan: RetrainPlan
    ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, str]]:
        """(image memory, audio memory, where each came from): a given file, else the stored
        items' raw embeddings, else None (the captions stand in)."""
        clip_dim, clap_dim = self.towers.dims()
        memories: dict[str, np.ndarray | None] = {}
        source: dict[str, str] = {}
        given = {
            "image": (plan.image_memory_path, clip_dim),
            "audio": (plan.audio_memory_path, clap_dim),
        }
        for modality, (path, dim) in given.items():
            if path is not None:
                memories[modality] = load_matrix(path, f"{modality} memory", dim)
                source[modality] = "file"
                continue
            _, raw = self.store.raw_embeddings(modality)
            memories[modality] = raw if len(raw) else None
            source[modality] = "store" if len(raw) else "captions (no stored items)"
        return memories["image"], memories["audio"], source
