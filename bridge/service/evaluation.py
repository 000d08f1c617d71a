"""How a freshly trained bridge version is judged before anyone activates it.

Two signals, stored in the version's metrics and the job's result:
- caption pairs: the held-out captions, CLAP-side projections retrieving the CLIP-side ones of
  the same caption (and back); R@K, mAP, median rank;
- stored items by label: class-level audio<->image retrieval through the new projectors, when
  stored images and audio carry a `label` metadata key with labels in common.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import NotFoundError
from bridge.modalities import MODALITIES

if TYPE_CHECKING:
    from bridge.storage.items import ItemStore

EVAL_LABEL_KEY = "label"
LABEL_EVAL_MAX_ITEMS = {"image": 5000, "audio": 500}  # gallery and queries


def evaluate_checkpoint(
    store: ItemStore, checkpoint: Any, held_out: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Caption-pair retrieval on the held-out captions; class-level audio<->image on stored
    items when both modalities carry a `label` metadata key."""
    from bridge.model.evaluation import cross_modal_metrics, retrieval_metrics

    clip_text, clap_text = held_out
    shared_clip = checkpoint.project("clip", clip_text, kind="text")
    shared_clap = checkpoint.project("clap", clap_text, kind="text")
    metrics: dict[str, Any] = {
        "captions": {
            "clap_to_clip": retrieval_metrics(shared_clap, shared_clip),
            "clip_to_clap": retrieval_metrics(shared_clip, shared_clap),
        }
    }
    labelled = {m: _labelled_sample(store, m) for m in MODALITIES}
    image, audio = labelled["image"], labelled["audio"]
    if image is not None and audio is not None:
        # Only items whose label the other side has too: a query with nothing relevant has
        # no rank (labels 3 and 9 against 0 and 0 gave an infinite median rank, which the
        # store refuses as metrics, and the job failed).
        common = set(image[1]) & set(audio[1])
        if not common:
            metrics["stored_items_by_label"] = {"skipped": "no label common to images and audio"}
            return metrics
        image, audio = _with_labels(image, common), _with_labels(audio, common)
        metrics["stored_items_by_label"] = cross_modal_metrics(
            checkpoint.project("clip", image[0]),
            checkpoint.project("clap", audio[0]),
            image[1],
            audio[1],
        )
    return metrics


def _labelled_sample(
    store: ItemStore, modality: str, attempts: int = 3
) -> tuple[np.ndarray, list[str]] | None:
    """Raw embeddings and labels of up to 5000 images / 500 audio items with a label (None
    when fewer than 2). Items deleted between the two reads (searches and deletes go on
    during a retrain) make it sample again: a delete used to fail the whole job here."""
    cap = LABEL_EVAL_MAX_ITEMS[modality]
    for _ in range(attempts):
        rowids = store.snapshot(modality, with_embeddings=False).rowids
        if len(rowids) > cap:
            rowids = np.sort(np.random.default_rng(0).choice(rowids, cap, replace=False))
        items = store.get_by_rowids(rowids)
        chosen = [r for r, item in sorted(items.items()) if EVAL_LABEL_KEY in item.metadata]
        if len(chosen) < 2:
            return None
        try:
            raw = store.raw_embeddings_for(modality, chosen)
        except NotFoundError:
            continue
        return raw, [str(items[r].metadata[EVAL_LABEL_KEY]) for r in chosen]
    return None


def _with_labels(
    sample: tuple[np.ndarray, list[str]], keep: set[str]
) -> tuple[np.ndarray, list[str]]:
    rows = [i for i, label in enumerate(sample[1]) if label in keep]
    return sample[0][rows], [sample[1][i] for i in rows]
