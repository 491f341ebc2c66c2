"""Lightning Attention-2 (Qin et al., 2024, "Lightning Attention-2: A Free Lunch for Handling
Unlimited Sequence Lengths in Large Language Models"; the attention of TransNormerLLM).

Linear attention without softmax, with an optional fixed per-head decay λ_h, O = [(Q Kᵀ) ⊙ M] V,
M_ts = λ^{t-s} for s <= t. Lightning-2 computes it in blocks of B positions (the paper's Algorithm 1):

    KV = 0                                                     # (Dh, Dh) per head
    for each block t = 1..L/B:
        O_intra = [(Q_t K_tᵀ) ⊙ M] V_t                         # quadratic inside the block
        O_inter = Λ Q_t KV                                     # Λ = diag(λ^1 .. λ^B)
        O_t     = O_intra + O_inter
        KV      = λ^B KV + (λ^B Λ^{-1} K_t)ᵀ V_t               # carried state
then the output normalisation of TransNormerLLM (an RMS norm per head) and the output projection.
The cost per token is O(B·Dh + Dh²), independent of the length; memory O(L·B + (L/B)·Dh²): no L×L.
The block form is `cab.kernels.causal_linear_attention`; the masked quadratic reference is
`cab.kernels.quadratic_causal_linear_attention`. Feature map: SiLU on q and k (TransNormerLLM).

Decay λ_h = exp(-(8/H)·(h+1)) (TransNormerLLM's / fla's `g_gamma` slopes for one layer). Decay needs
aligned positions, so it is used only for causal self; the other patterns use no decay, where
causal cross holds trivially (every query reads the same Kᵀ V).

Recurrent form: KV (Dh×Dh) per head, so state_size = H·Dh² (no normaliser: none is carried).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import zero_padded_keys
from cab.kernels import causal_linear_attention, causal_linear_flops


def lightning_decay(num_heads: int) -> torch.Tensor:
    """λ_h = exp(-(8/H)·(h+1)), h = 0..H-1: (H,)."""
    return torch.exp(-(8.0 / num_heads) * torch.arange(1, num_heads + 1, dtype=torch.float64))


@register_attention("lightning", patterns=set(Pattern))
class LightningAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, block_size: int = 64, decay: bool | None = None,
                 norm_eps: float = 1e-6):
        super().__init__(dim, num_heads, pattern)
        if decay and not self.causal:
            raise ValueError("lightning: decay needs aligned positions; use it only with causal_self")
        self.use_decay = self.causal if decay is None else bool(decay)
        self.block_size = block_size
        self.norm_eps = norm_eps
        self.register_buffer("decay", lightning_decay(num_heads).float(), persistent=False)

    def linear_core(self, q, k, v, key_padding_mask):
        """The un-normalised linear attention: q, k, v (B, H, L, Dh) -> (B, H, Lq, Dh)."""
        q, k = F.silu(q), zero_padded_keys(F.silu(k), key_padding_mask)  # padded keys add nothing
        if self.causal:
            decay = self.decay.to(q.dtype) if self.use_decay else None
            return causal_linear_attention(q, k, v, self.block_size, decay)  # (B, H, L, Dh)
        kv = k.transpose(-1, -2) @ v  # (B, H, Dh, Dh)
        return q @ kv  # (B, H, Lq, Dh)

    def attend(self, q, k, v, key_padding_mask):
        out = self.linear_core(q, k, v, key_padding_mask)
        return out * torch.rsqrt(out.square().mean(-1, keepdim=True) + self.norm_eps)  # RMS norm per head

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h = self.head_dim, self.num_heads
        if self.causal:  # per block of B: QKᵀ, ·V (2B²Dh each), KᵀV and Q·KV (2B·Dh² each)
            return causal_linear_flops(batch, h, len_q, d, d, self.block_size)
        return batch * h * (2 * len_k * d * d + 2 * len_q * d * d)  # Kᵀ V, then Q (Kᵀ V)

    def state_size(self, seq_len: int) -> int:
        return self.num_heads * self.head_dim * self.head_dim  # KV per head
