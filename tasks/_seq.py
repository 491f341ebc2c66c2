"""Model pieces shared by the real tasks (lstf, lm, mlm, seq2seq): sinusoidal positions, and an
encoder and a decoder stack built from `cab.backbone` blocks.

Every attention layer is asked of the task's `AttentionFactory` with its role, so the mechanism
under test sits exactly where its pattern is used and softmax everywhere else (CAB's rule):

    encoder self attention         noncausal_self
    decoder self attention         causal_self
    decoder -> encoder attention   noncausal_cross (whole target at once, Informer)
                                   or causal_cross (target generated left to right, T5)

Positions are sinusoidal (Vaswani et al., 2017, §3.5): they exist at any length, so a model
trained at one context can be evaluated at twice that (CAB's LM extrapolation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cab import Pattern
from cab.backbone import Block, CrossBlock


def sinusoidal_positions(length: int, dim: int, device=None, start: int = 0) -> torch.Tensor:
    """(length, dim): sin on even features, cos on odd, wavelengths 2π .. 10000·2π; rows are the positions
    start .. start + length - 1 (a generated token's row without the table before it)."""
    position = torch.arange(start, start + length, dtype=torch.float32, device=device)[:, None]  # (L, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class TokenSinusoidal(nn.Module):
    """Token embedding (scaled by √dim so it is not drowned by the unit-size positions) plus
    sinusoidal positions, with dropout."""

    def __init__(self, vocab_size: int, dim: int, dropout: float = 0.0):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.scale = math.sqrt(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids: (B, L) at positions start .. start + L - 1 (start > 0: tokens after a prompt, decoding)."""
        x = self.tokens(ids) * self.scale  # (B, L, dim)
        return self.dropout(x + sinusoidal_positions(ids.shape[1], x.shape[-1], ids.device, start))


class Encoder(nn.Module):
    """`num_layers` pre-norm blocks of noncausal self attention + MLP, then a LayerNorm."""

    def __init__(self, attention, dim: int, num_heads: int, num_layers: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(
            [Block(dim, attention(Pattern.NONCAUSAL_SELF, dim, num_heads), mlp_ratio, dropout) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, Ls, dim)


class Decoder(nn.Module):
    """`num_layers` blocks of causal self attention, cross attention (role `cross_role`) into the
    encoder's output, and an MLP; then a LayerNorm."""

    def __init__(self, attention, dim: int, num_heads: int, num_layers: int, cross_role: Pattern,
                 mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList([
            CrossBlock(dim, attention(Pattern.CAUSAL_SELF, dim, num_heads), attention(cross_role, dim, num_heads),
                       mlp_ratio, dropout)
            for _ in range(num_layers)
        ])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, memory)  # x: (B, Lt, dim); memory: (B, Ls, dim)
        return self.norm(x)
