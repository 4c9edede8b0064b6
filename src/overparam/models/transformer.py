"""A small decoder-only transformer language model built from PyTorch's own layers.

Token and learned position embeddings, ``nn.TransformerEncoderLayer`` blocks (``nn.MultiheadAttention``,
LayerNorm, GELU feed-forward; pre-norm) under a causal mask, a final LayerNorm and a linear head. Batches are
``{"tokens": (B, T) int64, "mask": (B, T) bool}`` dicts (mask True at real tokens), the form tokenizers hand out;
:func:`lm_loss` is the next-token cross-entropy over the real tokens only, and :func:`lm_inputs` picks what the
model reads from a batch. Instruments take them as ``inputs_of=lm_inputs, loss_fn=lm_loss``.

PyTorch's fused CPU attention kernel has no double backward; curvature instruments switch attention to its math
kernel while they differentiate twice (:func:`overparam.measure.data.twice_differentiable`), so this model needs
nothing special from its user.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyTransformerLM(nn.Module):
    """``vocab`` tokens, ``d_model`` wide, ``layers`` blocks of ``heads`` heads, context ``max_len``."""

    def __init__(self, vocab: int = 64, d_model: int = 64, heads: int = 4, layers: int = 2, max_len: int = 32,
                 ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be a multiple of heads={heads}")
        self.vocab, self.max_len = vocab, max_len
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        block = nn.TransformerEncoderLayer(d_model, heads, ff_mult * d_model, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab). ``mask`` (B, T), True at real tokens: padded positions are not attended to."""
        T = tokens.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_len={self.max_len}")
        h = self.embed(tokens) + self.pos[:T]
        causal = torch.triu(torch.full((T, T), float("-inf"), device=tokens.device, dtype=h.dtype), 1)
        pad = None if mask is None else torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(
            ~mask, float("-inf"))
        h = self.blocks(h, mask=causal, src_key_padding_mask=pad, is_causal=False)
        return self.head(self.norm(h))


def lm_inputs(batch: dict) -> tuple:
    """What :class:`TinyTransformerLM` reads from a batch: (tokens, mask)."""
    return batch["tokens"], batch["mask"]


def lm_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose current and next tokens are both real."""
    tokens, mask = batch["tokens"], batch["mask"]
    target = tokens[:, 1:].masked_fill(~(mask[:, 1:] & mask[:, :-1]), -100)
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1),
                                       ignore_index=-100)


def synthetic_corpus(n: int, seq_len: int = 32, vocab: int = 64, seed: int = 0, min_len: int | None = None) -> dict:
    """Sequences from a fixed random bigram chain, right-padded to ``seq_len`` (lengths from ``min_len``):
    learnable structure with no download. Returns {"tokens": (n, T), "mask": (n, T)}."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, vocab, generator=gen) * 3
    probs = torch.softmax(logits, 1)
    tokens = torch.zeros(n, seq_len, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, vocab, (n,), generator=gen)
    for t in range(1, seq_len):
        tokens[:, t] = torch.multinomial(probs[tokens[:, t - 1]], 1, generator=gen)[:, 0]
    lengths = torch.randint(min_len or seq_len // 2, seq_len + 1, (n,), generator=gen)
    mask = torch.arange(seq_len)[None, :] < lengths[:, None]
    return {"tokens": tokens.masked_fill(~mask, 0), "mask": mask}
