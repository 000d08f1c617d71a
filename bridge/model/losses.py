"""Contrastive and alignment losses of C-MCR (Wang et al., 2023) and CWCL (Srinivasa et al., 2023).

Logits, log-softmax (logsumexp-based) and losses are float32, or float64 when the inputs are
(method.md section 4). Under bf16 autocast (TrainConfig.precision) the matrix products that
produce the logits take bfloat16 inputs; everything after them stays float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bridge.model.config import CWCLReverse, LossName


def _logit_dtype(x: torch.Tensor) -> torch.Tensor:
    """At least float32 for logits (fp16/bf16 inputs are promoted; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def info_nce_directional(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """InfoNCE from a to b: CE(scale * a @ b.T, arange). Inputs (B, D), normalised."""
    logits = scale * _logit_dtype(a) @ _logit_dtype(b).T  # (B, B)
    targets = torch.arange(len(a), device=a.device)
    return F.cross_entropy(logits, targets)


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP eq. / C-MCR inter-MCR alignment): mean of both directions.

    Same value and gradients as CE(logits, arange) + CE(logits.T, arange) over 2, computed by
    `_SymmetricContrastive`, which keeps one (B, B) logit matrix and writes the gradient of
    both directions in a single pass (a third fewer B x B temporaries than autograd's version,
    which matters at batch 4096 on CPU).
    """
    return _symmetric_contrastive(a, b, scale, None, None)


def _symmetric_contrastive(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor | float,
    row_targets: torch.Tensor | None,
    col_targets: torch.Tensor | None,
) -> torch.Tensor:
    scale_t = torch.as_tensor(scale, dtype=torch.float32, device=a.device)
    loss: torch.Tensor = _SymmetricContrastive.apply(a, b, scale_t, row_targets, col_targets)
    return loss


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """bfloat16/float16 under autocast, else at least float32 (float64 stays float64)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return torch.promote_types(x.dtype, torch.float32)


def _target_logits(logits: torch.Tensor, targets: torch.Tensor | None, dim: int) -> torch.Tensor:
    """sum over `dim` of targets * logits: the logit each row (dim=1) or column (dim=0)
    expects; the diagonal for one-hot (None) targets."""
    if targets is None:
        return logits.diagonal().clone()
    targets = targets.to(logits.dtype)
    if dim == 1:  # row-wise dot products without a B x B temporary (half the time)
        return torch.einsum("ij,ij->i", targets, logits)
    return (targets * logits).sum(dim=0)  # einsum is ~6x slower along columns


class _SymmetricContrastive(torch.autograd.Function):
    """Cross-entropy of both directions of L = scale * a @ b.T against soft targets:

        loss = mean_i (lse_row_i - sum_j T_ij L_ij) / 2 + mean_j (lse_col_j - sum_i C_ij L_ij) / 2

    T (rows sum to 1) and C (columns sum to 1) are the targets, None meaning the identity
    (then this is symmetric InfoNCE). dL/dlogits = (softmax_rows(L) - T + softmax_cols(L) - C)
    / (2B). Forward keeps both softmax matrices, so backward needs no second exp pass. The
    matrix products run in the autocast dtype when autocast is on, except the logit product
    of soft targets (CWCL), which is float32; logits, softmax, targets and the gradient are
    float32 (float64 for float64 inputs).
    """

    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: torch.Tensor,
        row_targets: torch.Tensor | None,
        col_targets: torch.Tensor | None,
    ) -> torch.Tensor:
        mm_dtype = _matmul_dtype(a)
        acc_dtype = torch.promote_types(mm_dtype, torch.float32)
        a_m, b_m = a.to(mm_dtype), b.to(mm_dtype)
        # Soft targets amplify rounded logits, so their logit product is never narrower than
        # float32; the backward products (gradient times inputs) keep the autocast dtype.
        soft = row_targets is not None or col_targets is not None
        logit_dtype = acc_dtype if soft else mm_dtype
        # Dtypes are explicit from here on; autocast would also narrow the targets' products.
        with torch.autocast(a.device.type, enabled=False):
            logits = (a.to(logit_dtype) @ b.to(logit_dtype).T).to(acc_dtype)  # (B, B)
            logits.mul_(scale.to(acc_dtype))
            expected_rows = _target_logits(logits, row_targets, dim=1)
            expected_cols = _target_logits(logits, col_targets, dim=0)
            # d loss / d scale = sum(grad * logits) / scale needs the logits themselves.
            keep_logits = logits.clone() if ctx.needs_input_grad[2] else None
            softmax_rows, lse_rows = _row_softmax_and_lse(logits)
            softmax_cols, lse_cols = _column_softmax_and_lse_(logits)
            rows_loss = (lse_rows - expected_rows).mean()
            loss = (rows_loss + (lse_cols - expected_cols).mean()) / 2
        ctx.save_for_backward(
            a_m, b_m, softmax_rows, softmax_cols, scale, keep_logits, row_targets, col_targets
        )
        ctx.input_dtypes = (a.dtype, b.dtype)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a_m, b_m, softmax_rows, softmax_cols, scale, logits, rows, cols = ctx.saved_tensors
        batch = len(softmax_rows)
        # In place: a second backward through a retained graph fails autograd's version check
        # instead of reading a changed softmax (the trainer runs backward once per step).
        grad = softmax_rows.add_(softmax_cols)
        for targets in (rows, cols):
            if targets is None:
                grad.diagonal().sub_(1.0)
            else:
                grad.sub_(targets.to(grad.dtype))
        factor = grad_loss.to(grad.dtype) / (2 * batch)  # grad * factor = d loss / d logits
        grad_scale = None
        if ctx.needs_input_grad[2]:
            grad_scale = ((grad * logits).sum() * factor / scale.to(grad.dtype)).to(scale.dtype)
        # The scalar factors go onto the (B, D) products rather than the (B, B) gradient: a
        # pass over B x B fewer (bf16 keeps float32's exponent range, so nothing underflows).
        # The step is applied in float32: a bf16 scalar would bias the whole gradient by up to
        # 0.4%.
        grad_m = grad.to(a_m.dtype)
        step = scale.to(grad.dtype) * factor
        grad_a = (grad_m @ b_m).to(grad.dtype).mul_(step).to(ctx.input_dtypes[0])
        grad_b = (grad_m.T @ a_m).to(grad.dtype).mul_(step).to(ctx.input_dtypes[1])
        return grad_a, grad_b, grad_scale, None, None


def _row_softmax_and_lse(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax and logsumexp along rows from torch.softmax's fused kernel (faster than the
    passes of _column_softmax_and_lse_): logsumexp_i = max_i - log(max_j softmax_ij), exact to
    rounding since the largest probability of a row is at least 1/B."""
    peak = logits.amax(dim=1)
    probs = torch.softmax(logits, dim=1)
    return probs, peak - probs.amax(dim=1).log()


def _column_softmax_and_lse_(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax and logsumexp down the columns, sharing one max-shifted exp pass, in place:
    `logits` becomes the softmax (torch's fused softmax is slower along columns)."""
    peak = logits.amax(dim=0, keepdim=True)
    probs = logits.sub_(peak).exp_()
    total = probs.sum(dim=0, keepdim=True)
    probs.div_(total)
    return probs, (total.log() + peak).squeeze(0)


GRAM_BLOCKS = 8


def cwcl_weights(frozen: torch.Tensor, sharpen: float = 1.0) -> torch.Tensor:
    """CWCL soft-target weights w_ij = ((1 + cos(f_i, f_j)) / 2) ** sharpen, w_ii = 1, no gradient.

    `frozen` are embeddings from the frozen space (here: caption text embeddings). With large
    batches the paper's weights (sharpen=1) make targets nearly uniform; sharpen > 1 concentrates
    mass on the true pair (method.md section 4, pitfalls).
    """
    device = frozen.device.type
    with torch.no_grad(), torch.autocast(device, enabled=False):  # soft targets: float32
        unit = F.normalize(_logit_dtype(frozen), dim=-1)
        weights = _half_plus_half_gram(unit).clamp_(0.0, 1.0)  # (1 + cos) / 2, (B, B)
        if sharpen != 1.0:
            weights.pow_(sharpen)
        weights.fill_diagonal_(1.0)
    return weights


def _half_plus_half_gram(unit: torch.Tensor, blocks: int = GRAM_BLOCKS) -> torch.Tensor:
    """0.5 + 0.5 * unit @ unit.T. The products write into the 0.5 (no B x B temporaries), and
    only the blocks on and above the diagonal are multiplied: each row block's part below
    the diagonal is the transpose of a part already computed (8 blocks: 36/64 of the
    multiply-adds; this Gram matrix of the 1024-d mean reference is as costly as a logit product of
    a CWCL step)."""
    n = len(unit)
    base = torch.full((), 0.5, dtype=unit.dtype, device=unit.device)
    gram = torch.empty(n, n, dtype=unit.dtype, device=unit.device)
    edges = [n * i // blocks for i in range(blocks + 1)]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi > lo:
            torch.addmm(base, unit[lo:hi], unit[lo:].T, alpha=0.5, out=gram[lo:hi, lo:])
            gram[hi:, lo:hi] = gram[lo:hi, hi:].T
    return gram


def cwcl_directional(
    p: torch.Tensor, q: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """CWCL, direction p -> q (CWCL eq. 4):

    mean_i  -(sum_j w_ij * log softmax_j(scale * p_i . q_j)) / sum_j w_ij
    With weights = identity this is exactly InfoNCE from p to q.
    """
    logits = scale * _logit_dtype(p) @ _logit_dtype(q).T  # (B, B)
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    targets = weights / weights.sum(dim=1, keepdim=True)
    return -(targets * log_probs).sum(dim=1).mean()


def cwcl_symmetric(
    p: torch.Tensor,
    q: torch.Tensor,
    weights: torch.Tensor,
    scale: torch.Tensor | float,
    reverse: CWCLReverse = "infonce",
) -> torch.Tensor:
    """CWCL p -> q plus the reverse direction (CWCL with w.T, or InfoNCE); mean of both.

    The value and gradients of `cwcl_directional(p, q, w)` and of its reverse, from one logit
    matrix in one fused pass (`_SymmetricContrastive`) with `cwcl_targets(weights, reverse)`.
    """
    return _symmetric_contrastive(p, q, scale, *cwcl_targets(weights, reverse))


def cwcl_targets(
    weights: torch.Tensor, reverse: CWCLReverse = "infonce", overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(row targets, column targets) of CWCL's two directions: p -> q's are w normalised per
    row; the reverse's (q -> p with w.T) are w normalised per column, or None (identity: the
    InfoNCE reverse). No gradient. `overwrite`: the row targets reuse `weights`' memory (a
    B x B matrix fewer), so `weights` holds them afterwards."""
    with torch.no_grad():
        weights = _logit_dtype(weights)
        col_targets = weights / weights.sum(dim=0, keepdim=True) if reverse == "cwcl" else None
        row_sums = weights.sum(dim=1, keepdim=True)
        row_targets = weights.div_(row_sums) if overwrite else weights / row_sums
    return row_targets, col_targets


def diagonal_target_mass(weights: torch.Tensor) -> float:
    """Mean probability mass the CWCL targets put on the true pair (1.0 for InfoNCE)."""
    with torch.no_grad():
        return float((weights.diagonal() / weights.sum(dim=1)).mean())


def intra_alignment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Intra-MCR alignment: mean over the batch of the squared L2 distance ||x_i - y_i||^2."""
    return (_logit_dtype(x) - _logit_dtype(y)).pow(2).sum(dim=-1).mean()


@dataclass
class LossParts:
    total: torch.Tensor
    inter_text: float
    inter_pseudo: float
    intra: float
    target_mass: float


class CMCRLoss(nn.Module):
    """Loss = inter(text_clip, text_clap) + inter(pseudo_image, pseudo_audio) + lambda * intra.

    inter is symmetric InfoNCE, or CWCL with weights from the frozen caption embeddings.
    intra pulls each projected text towards its own projected pseudo image/audio (closes the
    modality gap inside each space, C-MCR section 3.3).
    """

    def __init__(
        self,
        loss: LossName = "infonce",
        intra_weight: float = 0.1,
        cwcl_reverse: CWCLReverse = "infonce",
        cwcl_sharpen: float = 1.0,
    ) -> None:
        super().__init__()
        self.loss = loss
        self.intra_weight = intra_weight
        self.cwcl_reverse = cwcl_reverse
        self.cwcl_sharpen = cwcl_sharpen

    def inter(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: torch.Tensor,
        targets: tuple[torch.Tensor, torch.Tensor | None] | None,
    ) -> torch.Tensor:
        """Symmetric InfoNCE, or CWCL with `targets` (cwcl_targets)."""
        if targets is not None:
            return _symmetric_contrastive(a, b, scale, *targets)
        return info_nce(a, b, scale)

    def forward(
        self,
        shared_clip_text: torch.Tensor,
        shared_clap_text: torch.Tensor,
        shared_image: torch.Tensor,
        shared_audio: torch.Tensor,
        scale: torch.Tensor,
        frozen_text: torch.Tensor | None = None,
    ) -> LossParts:
        weights = (
            cwcl_weights(frozen_text, self.cwcl_sharpen)
            if self.loss == "cwcl" and frozen_text is not None
            else None
        )
        target_mass = diagonal_target_mass(weights) if weights is not None else 1.0
        # Both inter terms share the batch's captions, so one set of CWCL targets serves both
        # (the weights are this call's own, so the row targets take their memory).
        targets = (
            cwcl_targets(weights, self.cwcl_reverse, overwrite=True)
            if weights is not None
            else None
        )
        inter_text = self.inter(shared_clip_text, shared_clap_text, scale, targets)
        inter_pseudo = self.inter(shared_image, shared_audio, scale, targets)
        total = inter_text + inter_pseudo
        intra = torch.zeros((), device=total.device)
        if self.intra_weight > 0:
            intra = intra_alignment(shared_clip_text, shared_image) + intra_alignment(
                shared_clap_text, shared_audio
            )
            total = total + self.intra_weight * intra
        return LossParts(
            total=total,
            inter_text=float(inter_text.detach()),
            inter_pseudo=float(inter_pseudo.detach()),
            intra=float(intra.detach()),
            target_mass=target_mass,
        )
