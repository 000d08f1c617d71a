"""What the trainer measures each epoch on its held-out captions, and which epoch it keeps.

Signals (docs/method.md section 7), stored with a ``val_`` prefix in the report's loss curve:
caption text against caption text (``mean_r_at_1``), and, when both memories are given, the
held-out captions retrieved through their pseudo vectors (``pseudo_audio_to_image_r_at_1``,
``pseudo_audio_to_image_map``). ``TrainConfig.select_epoch`` names the signal whose best
epoch the trainer keeps ("last": the last epoch, as before).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from bridge.model.evaluation import retrieval_metrics
from bridge.model.projectors import BridgeModel


@torch.no_grad()
def validate_epoch(
    model: BridgeModel,
    clip_text: torch.Tensor,
    clap_text: torch.Tensor,
    pseudo: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Held-out caption-pair retrieval in the shared space (instance level, both directions).

    With `pseudo` (the held-out captions' memory-retrieved image and audio vectors): the same
    captions retrieved through them, CLAP-side pseudo audio of caption i against the CLIP-side
    pseudo images of all held-out captions. Text-to-text R@1 saturates early; this pair goes
    through the media side of both projectors, the path an audio->image search takes.
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
    model.train()
    forward = retrieval_metrics(shared_clip, shared_clap)
    backward = retrieval_metrics(shared_clap, shared_clip)
    out = {
        "clip_to_clap_r_at_1": forward["r_at_1"],
        "clap_to_clip_r_at_1": backward["r_at_1"],
        "mean_r_at_1": (forward["r_at_1"] + backward["r_at_1"]) / 2,
        "mean_r_at_10": (forward["r_at_10"] + backward["r_at_10"]) / 2,
    }
    if shared_pseudo is not None:
        pseudo_image, pseudo_audio = shared_pseudo
        audio_to_image = retrieval_metrics(pseudo_audio, pseudo_image)
        out["pseudo_audio_to_image_r_at_1"] = audio_to_image["r_at_1"]
        out["pseudo_audio_to_image_map"] = audio_to_image["map"]
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
