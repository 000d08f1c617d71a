"""Losses against independent reference values and naive per-row references."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from bridge.model.losses import (
    CMCRLoss,
    _half_plus_half_gram,
    _symmetric_contrastive,
    cwcl_directional,
    cwcl_symmetric,
    cwcl_targets,
    cwcl_weights,
    diagonal_target_mass,
    info_nce,
    info_nce_directional,
    intra_alignment,
)

VECTORS = json.loads((Path(__file__).parents[2] / "data" / "contrastive_losses.json").read_text())


def _t(name: str) -> torch.Tensor:
    return torch.tensor(VECTORS[name], dtype=torch.float64)


def test_reference_vectors_infonce_and_cwcl() -> None:
    p, q, ref, scale = _t("p"), _t("q"), _t("ref"), VECTORS["scale"]
    w = cwcl_weights(ref)
    assert torch.allclose(w, _t("weights"), atol=1e-12)
    assert info_nce(p, q, scale).item() == pytest.approx(VECTORS["infonce_symmetric"], rel=1e-10)
    assert info_nce_directional(p, q, scale).item() == pytest.approx(VECTORS["infonce_p_to_q"])
    assert cwcl_directional(p, q, w, scale).item() == pytest.approx(
        VECTORS["cwcl_p_to_q"], rel=1e-10
    )
    assert cwcl_directional(q, p, w.T, scale).item() == pytest.approx(
        VECTORS["cwcl_q_to_p"], rel=1e-10
    )
    assert cwcl_symmetric(p, q, w, scale, "infonce").item() == pytest.approx(
        VECTORS["cwcl_p_to_q_plus_infonce_q_to_p_mean"], rel=1e-10
    )
    assert cwcl_symmetric(p, q, w, scale, "cwcl").item() == pytest.approx(
        VECTORS["cwcl_both_mean"], rel=1e-10
    )


def _naive_cwcl(p: torch.Tensor, q: torch.Tensor, w: torch.Tensor, scale: float) -> torch.Tensor:
    """Row-by-row transcription of the CWCL formula (method.md section 4)."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(p)):
        logits = torch.stack([scale * p[i] @ q[j] for j in range(len(q))])
        log_softmax = logits - torch.log(torch.exp(logits).sum())
        total = total - (w[i] * log_softmax).sum() / w[i].sum()
    return total / len(p)


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_cwcl_value_and_gradient_match_naive(batch: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    p = F.normalize(torch.randn(batch, 5, generator=gen, dtype=torch.float64), dim=-1)
    q = F.normalize(torch.randn(batch, 5, generator=gen, dtype=torch.float64), dim=-1)
    ref = torch.randn(batch, 5, generator=gen, dtype=torch.float64)
    w = cwcl_weights(ref, sharpen=2.0)
    p1, p2 = p.clone().requires_grad_(), p.clone().requires_grad_()
    fast = cwcl_directional(p1, q, w, 7.0)
    slow = _naive_cwcl(p2, q, w, 7.0)
    fast.backward()
    slow.backward()
    assert fast.item() == pytest.approx(slow.item(), rel=1e-10)
    assert torch.allclose(p1.grad, p2.grad, atol=1e-10)  # type: ignore[arg-type]


def test_cwcl_with_identity_weights_is_infonce() -> None:
    p, q = _t("p"), _t("q")
    eye = torch.eye(len(p), dtype=torch.float64)
    assert cwcl_directional(p, q, eye, 20.0).item() == pytest.approx(
        VECTORS["cwcl_identity_weights_equals_infonce_p_to_q"], rel=1e-10
    )
    assert cwcl_symmetric(p, q, eye, 20.0, "cwcl").item() == pytest.approx(
        info_nce(p, q, 20.0).item(), rel=1e-10
    )


def test_infonce_is_symmetric_and_matches_naive() -> None:
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=-1)
    assert info_nce(a, b, 10.0).item() == pytest.approx(info_nce(b, a, 10.0).item(), rel=1e-12)
    naive = 0.0
    for x, y in ((a, b), (b, a)):
        for i in range(5):
            logits = torch.stack([10.0 * x[i] @ y[j] for j in range(5)])
            naive += -(logits[i] - torch.logsumexp(logits, 0)).item() / 10
    assert info_nce(a, b, 10.0).item() == pytest.approx(naive, rel=1e-10)


def _autograd_info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The textbook form: cross-entropy of the logits and of their transpose."""
    logits = scale * a @ b.T
    targets = torch.arange(len(a))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


@pytest.mark.parametrize("batch", [1, 2, 9])
def test_fused_infonce_gradients_match_autograd(batch: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    a = F.normalize(torch.randn(batch, 6, generator=gen, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(batch, 6, generator=gen, dtype=torch.float64), dim=-1)
    grads = []
    for loss_fn in (info_nce, _autograd_info_nce):
        a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
        scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
        loss = loss_fn(a1, b1, scale)
        (loss * 3.0).backward()  # a non-unit upstream gradient must be honoured
        grads.append((loss.detach(), a1.grad, b1.grad, scale.grad))
    for fused, reference in zip(*grads, strict=True):
        assert torch.allclose(fused, reference, atol=1e-12), (fused, reference)


def _autograd_cwcl(reverse: str) -> Any:
    """The textbook CWCL of both directions (cwcl_directional), through autograd."""

    def loss(p: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, w: torch.Tensor) -> Any:
        back = cwcl_directional(q, p, w.T, scale) if reverse == "cwcl" else None
        if back is None:
            back = F.cross_entropy(scale * q @ p.T, torch.arange(len(p)))
        return (cwcl_directional(p, q, w, scale) + back) / 2

    return loss


@pytest.mark.parametrize("reverse", ["infonce", "cwcl"])
@pytest.mark.parametrize("batch", [1, 2, 9])
def test_fused_cwcl_gradients_match_autograd(batch: int, reverse: str) -> None:
    """cwcl_symmetric runs both directions in one fused pass; value and gradients are those
    of the per-direction formula, also for asymmetric weights (w != w.T)."""
    gen = torch.Generator().manual_seed(batch)
    p = F.normalize(torch.randn(batch, 6, generator=gen, dtype=torch.float64), dim=-1)
    q = F.normalize(torch.randn(batch, 6, generator=gen, dtype=torch.float64), dim=-1)
    w = torch.rand(batch, batch, generator=gen, dtype=torch.float64).fill_diagonal_(1.0)
    grads = []

    def fused(p: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, w: torch.Tensor) -> Any:
        return cwcl_symmetric(p, q, w, scale, reverse)  # type: ignore[arg-type]

    for loss_fn in (fused, _autograd_cwcl(reverse)):
        p1, q1 = p.clone().requires_grad_(), q.clone().requires_grad_()
        scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
        loss = loss_fn(p1, q1, scale, w)
        (loss * 3.0).backward()
        grads.append((loss.detach(), p1.grad, q1.grad, scale.grad))
    for fused, reference in zip(*grads, strict=True):
        assert torch.allclose(fused, reference, atol=1e-12), (fused, reference)


def test_fused_infonce_scale_gradient_in_float32() -> None:
    gen = torch.Generator().manual_seed(3)
    a = F.normalize(torch.randn(16, 8, generator=gen), dim=-1)
    log_scale = torch.tensor(math.log(20.0), requires_grad=True)
    info_nce(a, a.roll(1, 0), log_scale.exp()).backward()
    reference = torch.tensor(math.log(20.0), requires_grad=True)
    _autograd_info_nce(a, a.roll(1, 0), reference.exp()).backward()
    assert log_scale.grad is not None and reference.grad is not None
    assert log_scale.grad.item() == pytest.approx(reference.grad.item(), rel=1e-4)


def test_infonce_under_bf16_autocast_is_close_to_fp32() -> None:
    """The bf16 training path: bfloat16 products, float32 logits and loss, float32 grads."""
    gen = torch.Generator().manual_seed(4)
    a = F.normalize(torch.randn(256, 64, generator=gen), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(256, 64, generator=gen), dim=-1)
    exact = info_nce(a, b, 20.0)
    (grad_exact,) = torch.autograd.grad(exact, a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = info_nce(a, b, 20.0)
    (grad_mixed,) = torch.autograd.grad(mixed, a)
    assert mixed.dtype == torch.float32 and grad_mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(exact.item(), rel=2e-3)
    relative_error = (grad_mixed - grad_exact).norm() / grad_exact.norm()
    assert relative_error < 0.02, relative_error
    assert not torch.equal(grad_mixed, grad_exact)  # the bf16 path really ran


def test_cwcl_under_bf16_autocast_keeps_float32_logits_and_targets() -> None:
    """CWCL under the bf16 training path: the weights, logits, softmax and targets are float32
    (so the loss equals the float32 loss of the same inputs); only the two backward products
    take bfloat16 inputs. Gradient error against float64: the old all-bf16 path 0.55%, this
    path 0.31%, at batch 4096 (docs/benchmarks.md, "Training throughput")."""
    gen = torch.Generator().manual_seed(5)
    centres = torch.randn(8, 64, generator=gen)
    labels = torch.randint(0, 8, (256,), generator=gen)
    a, b, frozen = (
        F.normalize(centres[labels] + torch.randn(256, 64, generator=gen), dim=-1) for _ in range(3)
    )
    a = a.bfloat16().float().requires_grad_()  # the projectors' bf16 outputs, upcast
    reference = a.detach().double().requires_grad_()
    targets = cwcl_targets(cwcl_weights(frozen))
    exact = cwcl_symmetric(reference, b.double(), cwcl_weights(frozen.double()), 20.0)
    (grad_exact,) = torch.autograd.grad(exact, reference)
    fp32 = _symmetric_contrastive(a, b, 20.0, *targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_weights = cwcl_weights(frozen)
        mixed = _symmetric_contrastive(a, b, 20.0, *targets)
    (grad_mixed,) = torch.autograd.grad(mixed, a)
    assert torch.equal(autocast_weights, cwcl_weights(frozen))
    assert mixed.dtype == torch.float32 and grad_mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(fp32.item(), rel=1e-6)
    relative_error = (grad_mixed.double() - grad_exact).norm() / grad_exact.norm()
    assert 1e-5 < relative_error < 0.01, relative_error  # bf16 backward products really ran


def test_half_plus_half_gram_is_the_dense_formula() -> None:
    """The blockwise Gram matrix behind the CWCL weights equals 0.5 + 0.5 * U @ U.T (odd sizes
    too) and is symmetric bit for bit."""
    for n in (1, 7, 64):
        unit = F.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(n)), dim=-1)
        gram = _half_plus_half_gram(unit)
        torch.testing.assert_close(gram, 0.5 + 0.5 * unit @ unit.T)
        assert torch.equal(gram, gram.T)


def test_cwcl_weights_range_diagonal_and_sharpening() -> None:
    ref = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    w = cwcl_weights(ref)
    assert torch.all(w >= 0) and torch.all(w <= 1)
    assert torch.all(w.diagonal() == 1)
    assert not w.requires_grad
    sharp = cwcl_weights(ref, sharpen=8.0)
    assert diagonal_target_mass(sharp) > diagonal_target_mass(w)
    assert diagonal_target_mass(torch.eye(4)) == 1.0


def test_fp16_inputs_give_finite_fp32_logits() -> None:
    p = F.normalize(torch.randn(8, 4), dim=-1).half()
    loss = info_nce(p, p, 100.0)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_intra_alignment_and_cmcr_loss_parts() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert intra_alignment(x, y).item() == pytest.approx(1.0)  # (2 + 0) / 2
    criterion = CMCRLoss("infonce", intra_weight=0.5)
    scale = torch.tensor(10.0)
    parts = criterion(x, x, y, y, scale)
    expected = info_nce(x, x, 10.0) + info_nce(y, y, 10.0) + 0.5 * 2 * intra_alignment(x, y)
    assert parts.total.item() == pytest.approx(expected.item())
    cwcl_parts = CMCRLoss("cwcl", intra_weight=0.0)(x, x, y, y, scale, frozen_text=x)
    assert cwcl_parts.target_mass < 1.0
