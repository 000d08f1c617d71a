"""Ex-MCR training (Wang et al., 2023, "Extending Multi-modal Contrastive Representation").

CLIP stays frozen and is the shared space; one head (bridge/model/projectors.py, ExMCRHead:
a linear layer `Head1`, then MLP blocks `Head2`) maps CLAP into it. The authors released
the head's code and weights but not its training code; this follows the paper's pipeline
(method.md section 9) on the trainer's inputs:

1. Modality-centric pseudo tuples (CLAP audio, CLAP text, CLIP text, CLIP image), built once
   per corpus from frozen inputs (`centred_tuples`):
   - text-centric: each training caption pair, with the pseudo audio and image of C-MCR's
     memory soft retrieval (the trainer's corpus, unchanged);
   - audio-centric: each audio-memory clip retrieves the caption corpus through CLAP text,
     w = softmax(a · T_clapᵀ / τ_mem); its CLAP text is w · T_clap and its CLIP text the same
     weights over the same captions' CLIP embeddings, w · T_clip; that CLIP text retrieves
     the image memory for its image;
   - image-centric: the mirror image, from each image-memory entry through CLIP text.
2. Semantic-completion noise on all four, fresh every step (the trainer's C-MCR step 2).
3. Loss (`ExMCRLoss`): dense inter-space alignment, symmetric InfoNCE between the head's
   projection of each CLAP vector (text, audio) and each frozen CLIP vector of the tuple
   (text, image): four terms; plus λ times the intra-space term on the linear layer alone,
   the squared distance between Head1(CLAP text) and Head1(audio), both normalised, which
   closes the audio-text gap inside CLAP before the MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bridge.model.losses import LossParts, info_nce, intra_alignment
from bridge.model.memory_retrieval import soft_retrieve
from bridge.model.projectors import ExMCRHead

# Tuple fields in the trainer's corpus order: CLIP text, CLAP text, CLIP image, CLAP audio.
Tuples = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def paired_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    paired: torch.Tensor,
    temperature: float,
    chunk_size: int = 4096,
    top_k: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalise(w · keys), normalise(w · paired)) with w = softmax(queries · keysᵀ / τ).

    `paired[i]` is row i of `keys` seen by the other model (the same caption through the
    other text tower). Runs soft_retrieve on [keys | paired] with queries padded by zeros,
    so the paired half takes no part in the similarities but is averaged with the weights.
    """
    padded = torch.cat([queries, queries.new_zeros(len(queries), paired.shape[1])], dim=1)
    joint = soft_retrieve(
        padded,
        torch.cat([keys, paired], dim=1),
        temperature,
        chunk_size=chunk_size,
        top_k=top_k,
    )  # (N, D_keys + D_paired), one common scale for both halves
    width = keys.shape[1]
    return F.normalize(joint[:, :width], dim=-1), F.normalize(joint[:, width:], dim=-1)


def centred_tuples(
    clip_text: torch.Tensor,
    clap_text: torch.Tensor,
    image_memory: torch.Tensor | None,
    audio_memory: torch.Tensor | None,
    temperature: float,
    chunk_size: int = 4096,
    top_k: int = 0,
) -> dict[str, Tuples]:
    """The audio-centric and image-centric tuples (module docstring, step 1), as
    (clip_text, clap_text, image, audio) row-aligned tensors; a memory that is None gives
    no tuples of its kind, and a missing counterpart memory is stood in for by the text of
    the same space. Inputs are unit rows; the caption pairs are the training captions."""
    options = {"chunk_size": chunk_size, "top_k": top_k}

    def media(text: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        if memory is None:
            return text.clone()
        return soft_retrieve(text, memory, temperature, **options)

    tuples: dict[str, Tuples] = {}
    if audio_memory is not None:
        t_clap, t_clip = paired_retrieve(audio_memory, clap_text, clip_text, temperature, **options)
        tuples["audio"] = (t_clip, t_clap, media(t_clip, image_memory), audio_memory)
    if image_memory is not None:
        t_clip, t_clap = paired_retrieve(image_memory, clip_text, clap_text, temperature, **options)
        tuples["image"] = (t_clip, t_clap, image_memory, media(t_clap, audio_memory))
    return tuples


class ExMCRLoss(nn.Module):
    """Dense inter-space InfoNCE plus λ · intra-space alignment on the head's linear layer.

    LossParts: `inter_text` sums the two terms whose CLAP side is text (against CLIP text and
    CLIP image), `inter_pseudo` the two whose CLAP side is audio (against CLIP image and
    CLIP text), `intra` is the unweighted linear-layer term.
    """

    def __init__(self, intra_weight: float = 0.1) -> None:
        super().__init__()
        self.intra_weight = intra_weight

    def forward(
        self,
        head: ExMCRHead,
        clip_text: torch.Tensor,
        clap_text: torch.Tensor,
        image: torch.Tensor,
        audio: torch.Tensor,
        scale: torch.Tensor,
    ) -> LossParts:
        B = len(clap_text)
        linear = head.Head1(torch.cat([clap_text, audio]))  # (2B, D_clip)
        # Text and audio share the head's BatchNorms as one batch (one BN per layer).
        projected = head.Head2(linear)  # (2B, D_clip), unit rows
        shared_text, shared_audio = projected[:B], projected[B:]
        clip_text, image = F.normalize(clip_text, dim=-1), F.normalize(image, dim=-1)
        inter_text = info_nce(shared_text, clip_text, scale) + info_nce(shared_text, image, scale)
        inter_pseudo = info_nce(shared_audio, image, scale)
        inter_pseudo = inter_pseudo + info_nce(shared_audio, clip_text, scale)
        intra = torch.zeros((), device=projected.device)
        if self.intra_weight > 0:
            unit = F.normalize(linear.float(), dim=-1)  # (2B, D_clip)
            intra = intra_alignment(unit[:B], unit[B:])
        total = inter_text + inter_pseudo + self.intra_weight * intra
        text, pseudo, gap = (float(term.detach()) for term in (inter_text, inter_pseudo, intra))
        return LossParts(total, text, pseudo, gap, target_mass=1.0)
