"""Backbone pieces shared by tasks: pre-norm residual blocks around any attention layer.

    Block:      x + mixer(conv(LN(x))) [+ MLP(LN(x))]      (self patterns; optional causal short conv)
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


class ShortConv(nn.Module):
    """Depthwise convolution over positions with a short kernel, one filter per channel.

    The short convolution that H3, Based and Mamba put beside their mixers (Zoology's BaseConv):
    each position sees its `kernel - 1` neighbours, so one layer can bind a token to the token before
    it, the first half of an induction head. Causal: the window is [i - kernel + 1, i]. Noncausal:
    centred, [i - kernel // 2, i + (kernel - 1) - kernel // 2]. Padded positions are zeroed first,
    so they reach no real position. Cost: 2·kernel·dim FLOPs per position.
    """

    def __init__(self, dim: int, kernel: int, causal: bool):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim, bias=True)
        self.kernel, self.causal = kernel, causal
        self.pad = (kernel - 1, 0) if causal else (kernel // 2, kernel - 1 - kernel // 2)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, dim)  padding_mask: (B, L) True = padding -> (B, L, dim)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        y = nn.functional.pad(x.transpose(1, 2), self.pad)  # (B, dim, L + kernel - 1)
        return self.conv(y).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, causal={self.causal}"


class Block(nn.Module):
    """Pre-norm block: an optional short convolution, the sequence mixer, then an optional MLP
    (Zoology's MQAR models use no MLP). The convolution looks back only, whatever the mixer (as the
    short convolutions of H3, Based and Mamba do): the same backbone for every pattern, and a
    noncausal mixer still sees the whole sequence itself."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: int = 0, dropout: float = 0.0, short_conv: int = 0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.conv = ShortConv(dim, short_conv, causal=True) if short_conv else None
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim) if mlp_ratio else None
        self.mlp = MLP(dim, mlp_ratio, dropout) if mlp_ratio else None

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        if self.conv is not None:
            h = self.conv(h, padding_mask)
        x = x + self.dropout(self.mixer(h, key_padding_mask=padding_mask))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x

    # decode (generation, docs/decode.md): the same block around the mixer's prefill and step
    def prefill(self, x: torch.Tensor):
        """x: (B, L, dim) prompt -> (out (B, L, dim) = self(x), the mixer's decode state)."""
        if self.conv is not None:
            raise NotImplementedError("decoding a block with a short convolution is not supported")
        out, state = self.mixer.prefill(self.norm1(x))
        return self._after_mixer(x, out), state

    def step(self, x_t: torch.Tensor, state):
        """x_t: (B, 1, dim), the next position -> (out_t (B, 1, dim), the mixer's state after it)."""
        out, state = self.mixer.step(self.norm1(x_t), state)
        return self._after_mixer(x_t, out), state

    def _after_mixer(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(mixed)
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
