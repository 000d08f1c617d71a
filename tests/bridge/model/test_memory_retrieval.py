"""Memory soft retrieval: chunked online softmax equals the direct formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bridge.model.memory_retrieval import add_noise, soft_retrieve


def _direct(queries: torch.Tensor, memory: torch.Tensor, tau: float) -> torch.Tensor:
    return F.normalize(torch.softmax(queries @ memory.T / tau, dim=1) @ memory, dim=-1)


def test_chunked_matches_direct_for_any_chunk_size() -> None:
    gen = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(37, 16, generator=gen), dim=-1)
    memory = F.normalize(torch.randn(101, 16, generator=gen), dim=-1)
    expected = _direct(queries, memory, 0.01)
    for chunk in (1, 7, 100, 1000):
        got = soft_retrieve(queries, memory, 0.01, chunk_size=chunk, query_batch=10)
        assert torch.allclose(got, expected, atol=1e-5), chunk


def test_top_k_with_full_k_equals_exact_and_small_k_differs() -> None:
    gen = torch.Generator().manual_seed(1)
    queries = F.normalize(torch.randn(9, 8, generator=gen), dim=-1)
    memory = F.normalize(torch.randn(50, 8, generator=gen), dim=-1)
    exact = soft_retrieve(queries, memory, 0.5)
    assert torch.allclose(soft_retrieve(queries, memory, 0.5, top_k=50), exact, atol=1e-5)
    assert not torch.allclose(soft_retrieve(queries, memory, 0.5, top_k=2), exact, atol=1e-3)


def test_low_temperature_retrieves_nearest_memory_entry() -> None:
    memory = torch.eye(4)
    queries = F.normalize(torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8]]), dim=-1)
    got = soft_retrieve(queries, memory, 0.001)
    assert torch.allclose(got, memory[[0, 3]], atol=1e-4)


def test_noise_is_fresh_normalised_and_seeded() -> None:
    x = F.normalize(torch.randn(6, 32), dim=-1)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = add_noise(x, 0.004, g1), add_noise(x, 0.004, g2)
    assert torch.equal(a, b)
    assert not torch.equal(add_noise(x, 0.004, g1), a)  # fresh draw on the next call
    assert torch.allclose(a.norm(dim=-1), torch.ones(6), atol=1e-5)
    assert torch.equal(add_noise(x, 0.0), x)
