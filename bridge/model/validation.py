"""What the trainer measures each epoch on its held-out captions, and which epoch it keeps.

Signals (docs/method.md section 7), stored with a ``val_`` prefix in the report's loss curve:
caption text against caption text (``mean_r_at_1``), and, when both memories are given, the
held-out captions retrieved through their pseudo vectors (``pseudo_audio_to_image_r_at_1``,
``pseudo_audio_to_image_map``), and, when a labelled dev set is given (`DevSet`), its
media retrieved across the bridge at class level (``dev_audio_to_image_p_at_1``,
``dev_image_to_audio_p_at_1`` and their mean ``dev_p_at_1``): the one signal that measures
the path a search takes on real items. ``TrainConfig.select_epoch`` names the signal whose
best epoch the trainer keeps ("last": the last epoch, as before).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bridge.arrays import validate_matrix
from bridge.errors import InvalidInputError
from bridge.model.evaluation import retrieval_metrics
from bridge.model.projectors import BridgeModel


@dataclass(frozen=True)
class DevSet:
    """Labelled media for class-level validation: raw native embeddings and one label per
    row (any hashable values; an image and a clip match when their labels are equal).
    Never trained on; the trainer only measures retrieval across the bridge with it."""

    image: np.ndarray  # (N_i, D_clip) CLIP image embeddings
    image_labels: np.ndarray  # (N_i,)
    audio: np.ndarray  # (N_a, D_clap) CLAP audio embeddings
    audio_labels: np.ndarray  # (N_a,)

    def __post_init__(self) -> None:
        for modality in ("image", "audio"):
            vectors = validate_matrix(getattr(self, modality), f"dev {modality} embeddings")
            labels = np.asarray(getattr(self, f"{modality}_labels"))
            if labels.ndim != 1 or len(labels) != len(vectors):
                raise InvalidInputError(
                    f"dev {modality}: {len(vectors)} embeddings but {labels.shape} labels; "
                    "give one label per row"
                )
            object.__setattr__(self, modality, vectors)
            object.__setattr__(self, f"{modality}_labels", labels)
        shared = set(self.image_labels.tolist()) & set(self.audio_labels.tolist())
        if not shared:
            raise InvalidInputError(
                "dev image and audio labels have no value in common: class-level retrieval "
                "needs images and clips of the same classes"
            )

    def check_dims(self, clip_dim: int, clap_dim: int) -> None:
        validate_matrix(self.image, "dev image embeddings", clip_dim)
        validate_matrix(self.audio, "dev audio embeddings", clap_dim)


@torch.no_grad()
def validate_epoch(
    model: BridgeModel,
    clip_text: torch.Tensor,
    clap_text: torch.Tensor,
    pseudo: tuple[torch.Tensor, torch.Tensor] | None = None,
    dev: tuple[torch.Tensor, torch.Tensor, DevSet] | None = None,
) -> dict[str, float]:
    """Held-out caption-pair retrieval in the shared space (instance level, both directions).

    With `pseudo` (the held-out captions' memory-retrieved image and audio vectors): the same
    captions retrieved through them, CLAP-side pseudo audio of caption i against the CLIP-side
    pseudo images of all held-out captions. Text-to-text R@1 saturates early; this pair goes
    through the media side of both projectors, the path an audio->image search takes.

    With `dev` (unit image and audio tensors on the model's device, and their DevSet):
    class-level P@1 of dev audio against dev images and back, in the shared space.
    """
    model.eval()
    shared_clip = model.clip(clip_text, "text").cpu().numpy()
    shared_clap = model.clap(clap_text, "text").cpu().numpy()
    shared_pseudo = None
    if pseudo is not None:
        shared_pseudo = (
            model.clip(pseudo[0], "media").cpu().numpy(),
            model.clap(pseudo[1], "media").cpu().numpy(),
        )
    shared_dev = None
    if dev is not None:
        shared_dev = (
            model.clip(dev[0], "media").float().cpu().numpy(),
            model.clap(dev[1], "media").float().cpu().numpy(),
        )
    model.train()
    out: dict[str, float] = {}
    if len(shared_clip) >= 2:  # a dev set alone may be given, with no held-out captions
        forward = retrieval_metrics(shared_clip, shared_clap)
        backward = retrieval_metrics(shared_clap, shared_clip)
        out["clip_to_clap_r_at_1"] = forward["r_at_1"]
        out["clap_to_clip_r_at_1"] = backward["r_at_1"]
        out["mean_r_at_1"] = (forward["r_at_1"] + backward["r_at_1"]) / 2
        out["mean_r_at_10"] = (forward["r_at_10"] + backward["r_at_10"]) / 2
    if shared_pseudo is not None:
        pseudo_image, pseudo_audio = shared_pseudo
        audio_to_image = retrieval_metrics(pseudo_audio, pseudo_image)
        out["pseudo_audio_to_image_r_at_1"] = audio_to_image["r_at_1"]
        out["pseudo_audio_to_image_map"] = audio_to_image["map"]
    if shared_dev is not None and dev is not None:
        image, audio, labels = *shared_dev, dev[2]
        a2i = retrieval_metrics(audio, image, labels.audio_labels, labels.image_labels)
        i2a = retrieval_metrics(image, audio, labels.image_labels, labels.audio_labels)
        out["dev_audio_to_image_p_at_1"] = a2i["p_at_1"]
        out["dev_image_to_audio_p_at_1"] = i2a["p_at_1"]
        out["dev_p_at_1"] = (a2i["p_at_1"] + i2a["p_at_1"]) / 2
    return out


@dataclass
class EpochSelector:
    """Keeps the model weights of the epoch with the highest `signal` (a loss-curve key)."""

    signal: str  # "last" keeps nothing: the trained model is the last epoch's
    epoch: int | None = None
    value: float = float("-inf")
    state: dict[str, Any] | None = field(default=None, repr=False)

    def offer(self, model: BridgeModel, record: dict[str, float]) -> None:
        """After an epoch: remember its weights if `record` beats every earlier epoch."""
        value = record.get(self.signal)
        if self.signal == "last" or value is None or value <= self.value:
            return
        self.epoch, self.value = int(record["epoch"]), float(value)
        self.state = copy.deepcopy(model.state_dict())

    def restore(self, model: BridgeModel, epochs: int) -> dict[str, Any]:
        """Load the kept weights into `model`; returns what the report records."""
        if self.state is None:
            chosen: dict[str, Any] = {"by": "last", "epoch": epochs}
            if self.signal != "last":  # e.g. the pseudo signal without both memories
                chosen["fallback"] = f"no epoch reported {self.signal}; kept the last"
            return chosen
        model.load_state_dict(self.state)
        return {"by": self.signal, "epoch": self.epoch, "value": self.value}
