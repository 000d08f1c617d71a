"""How a freshly trained bridge version is judged before anyone activates it.

Two signals, stored in the version's metrics and the job's result:
- caption pairs: the held-out captions, CLAP-side projections retrieving the CLIP-side ones of
  the same caption (and back); R@K, mAP, median rank;
- stored items by label: class-level audio<->image retrieval through the new projectors, when
  stored images and audio carry a `label` metadata key with labels in common (the same items
  are the trainer's dev set: `stored_dev_set`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import NotFoundError

if TYPE_CHECKING:
    from bridge.model.validation import DevSet
    from bridge.storage.items import ItemStore

# stored_dev_set's answer: the dev set, or None and why not (None: nothing to say).
StoredDev = tuple["DevSet | None", "str | None"]

EVAL_LABEL_KEY = "label"
LABEL_EVAL_MAX_ITEMS = {"image": 5000, "audio": 500}  # gallery and queries


def evaluate_checkpoint(
    checkpoint: Any, held_out: tuple[np.ndarray, np.ndarray], labelled: StoredDev
) -> dict[str, Any]:
    """Caption-pair retrieval on the held-out captions; class-level audio<->image on the
    stored items with a `label` metadata key (`labelled`: stored_dev_set's answer)."""
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
    dev, skipped = labelled
    if skipped is not None:
        metrics["stored_items_by_label"] = {"skipped": skipped}
    if dev is None:
        return metrics
    metrics["stored_items_by_label"] = cross_modal_metrics(
        checkpoint.project("clip", dev.image),
        checkpoint.project("clap", dev.audio),
        dev.image_labels,
        dev.audio_labels,
    )
    return metrics


def stored_dev_set(store: ItemStore) -> StoredDev:
    """Stored images and audio that carry a `label` metadata key, as a labelled dev set (a
    sample: LABEL_EVAL_MAX_ITEMS), keeping only labels both sides have. (None, None) when
    either side has fewer than 2 labelled items; (None, why) when no label is common. The
    trainer measures it every epoch (val_dev_p_at_1), the evaluation after training."""
    from bridge.model.validation import DevSet

    image, audio = _labelled_sample(store, "image"), _labelled_sample(store, "audio")
    if image is None or audio is None:
        return None, None
    # Only items whose label the other side has too: a query with nothing relevant has no
    # rank (labels 3 and 9 against 0 and 0 gave an infinite median rank, which the store
    # refuses as metrics, and the job failed).
    common = set(image[1]) & set(audio[1])
    if not common:
        return None, "no label common to images and audio"
    image, audio = _with_labels(image, common), _with_labels(audio, common)
    return DevSet(image[0], np.array(image[1]), audio[0], np.array(audio[1])), None


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
