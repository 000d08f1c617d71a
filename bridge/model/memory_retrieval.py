"""Semantic enhancement of C-MCR: memory soft retrieval (consistency) and noise (completion).

The soft retrieval depends only on frozen inputs, so it is computed once per corpus
(method.md section 6) and chunked over the memory with a running log-sum-exp, so peak memory
is O(N * chunk) instead of O(N * M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_retrieve(
    queries: torch.Tensor,
    memory: torch.Tensor,
    temperature: float,
    chunk_size: int = 4096,
    query_batch: int = 8192,
    top_k: int = 0,
) -> torch.Tensor:
    """softmax(queries @ memory.T / temperature) @ memory, normalised rows.

    queries (N, D) and memory (M, D) are L2-normalised. Exact (top_k=0) uses an online softmax
    over memory chunks; top_k > 0 keeps only the k most similar memory entries per query.
    """
    out = torch.empty_like(queries)
    for start in range(0, len(queries), query_batch):
        block = queries[start : start + query_batch]
        if top_k > 0:
            out[start : start + query_batch] = _soft_retrieve_topk(
                block, memory, temperature, top_k
            )
        else:
            out[start : start + query_batch] = _soft_retrieve_chunked(
                block, memory, temperature, chunk_size
            )
    return F.normalize(out, dim=-1)


def _soft_retrieve_chunked(
    queries: torch.Tensor, memory: torch.Tensor, temperature: float, chunk_size: int
) -> torch.Tensor:
    B, D = queries.shape
    running_max = torch.full((B, 1), float("-inf"), device=queries.device)
    running_sum = torch.zeros((B, 1), device=queries.device)
    accum = torch.zeros((B, D), device=queries.device)
    for start in range(0, len(memory), chunk_size):
        chunk = memory[start : start + chunk_size]  # (C, D)
        logits = queries @ chunk.T / temperature  # (B, C)
        new_max = torch.maximum(running_max, logits.max(dim=1, keepdim=True).values)
        rescale = torch.exp(running_max - new_max)  # (B, 1)
        weights = torch.exp(logits - new_max)  # (B, C)
        running_sum = running_sum * rescale + weights.sum(dim=1, keepdim=True)
        accum = accum * rescale + weights @ chunk
        running_max = new_max
    return accum / running_sum


def _soft_retrieve_topk(
    queries: torch.Tensor, memory: torch.Tensor, temperature: float, top_k: int
) -> torch.Tensor:
    k = min(top_k, len(memory))
    logits = queries @ memory.T / temperature  # (B, M)
    values, indices = logits.topk(k, dim=1)  # (B, k)
    probs = torch.softmax(values, dim=1)
    return torch.einsum("bk,bkd->bd", probs, memory[indices])


def add_noise(
    x: torch.Tensor, variance: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Semantic completion: x + N(0, variance), then re-normalise (fresh noise every call)."""
    if variance <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return F.normalize(x + noise * variance**0.5, dim=-1)
