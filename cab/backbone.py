"""Backbone pieces shared by tasks: pre-norm residual blocks around any attention layer.

    Block:      x + mixer(LN(x)) [+ MLP(LN(x))]                        (self patterns)
    CrossBlock: x + self(LN(x)); x + cross(LN(x), context); [+ MLP]    (decoders reading a source)

The attention layers come from the task's `AttentionFactory`, so the layer under test sits exactly
where its pattern is used and softmax everywhere else (CAB's rule).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.fc2 = nn.Linear(ratio * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(nn.functional.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm block: sequence mixer, then an optional MLP (Zoology's MQAR models use none)."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: int = 0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim) if mlp_ratio else None
        self.mlp = MLP(dim, mlp_ratio, dropout) if mlp_ratio else None

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.norm1(x), key_padding_mask=padding_mask))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


class CrossBlock(nn.Module):
    """Decoder block: self attention over the target, cross attention into the source, MLP."""

    def __init__(self, dim: int, self_mixer: nn.Module, cross_mixer: nn.Module, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_mixer = self_mixer
        self.norm2 = nn.LayerNorm(dim)
        self.cross_mixer = cross_mixer
        self.dropout = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(dim) if mlp_ratio else None
        self.mlp = MLP(dim, mlp_ratio, dropout) if mlp_ratio else None

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_padding_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.dropout(self.self_mixer(self.norm1(x), key_padding_mask=padding_mask))
        x = x + self.dropout(self.cross_mixer(self.norm2(x), context=context, key_padding_mask=context_padding_mask))
        if self.mlp is not None:
            x = x + self.mlp(self.norm3(x))
        return x


class TokenEmbedding(nn.Module):
    """Token embedding plus an optional learned absolute position embedding, with dropout."""

    def __init__(self, vocab_size: int, dim: int, max_len: int = 0, dropout: float = 0.0):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim) if max_len else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids)  # (B, L, dim)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1], device=ids.device))
        return self.dropout(x)


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """GPT-2 style: normal(0, 0.02) for linear and embedding weights, zero biases. Attention layers
    keep their own initialisation (state-space and routed mechanisms depend on it)."""
    from cab.attention import AttentionLayer

    inside_attention = {id(m) for layer in model.modules() if isinstance(layer, AttentionLayer) for m in layer.modules()}
    for module in model.modules():
        if id(module) in inside_attention:
            continue
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
