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
The loop runs over segments of `segment_blocks` blocks (1,024 positions by default): inside a segment
`cab.kernels.causal_linear_attention` (the same block form, all blocks of the segment at once), across
segments the carried KV, so the working set, and the time per token, do not grow with the length.
The masked quadratic reference is `cab.kernels.quadratic_causal_linear_attention`. Feature map: SiLU on q and k (TransNormerLLM).

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
                 norm_eps: float = 1e-6, segment_blocks: int = 16):
        super().__init__(dim, num_heads, pattern)
        if decay and not self.causal:
            raise ValueError("lightning: decay needs aligned positions; use it only with causal_self")
        self.use_decay = self.causal if decay is None else bool(decay)
        self.block_size = block_size
        self.segment_blocks = segment_blocks
        self.norm_eps = norm_eps
        self.register_buffer("decay", lightning_decay(num_heads).float(), persistent=False)

    def linear_core(self, q, k, v, key_padding_mask):
        """The un-normalised linear attention: q, k, v (B, H, L, Dh) -> (B, H, Lq, Dh)."""
        q, k = F.silu(q), zero_padded_keys(F.silu(k), key_padding_mask)  # padded keys add nothing
        if self.causal:
            return self._causal_segments(q, k, v)
        kv = k.transpose(-1, -2) @ v  # (B, H, Dh, Dh)
        return q @ kv  # (B, H, Lq, Dh)

    def _segment_length(self) -> int:
        return self.block_size * self.segment_blocks

    def _causal_segments(self, q, k, v):
        """The block recurrence over segments of `segment_blocks` blocks: inside a segment the chunked
        kernel (intra-block products + prefix of block states), across segments the carried state KV.
        Every tensor is of segment size, so the time per token does not grow with the length."""
        b, h, length, d = q.shape
        lam = self.decay.to(q.dtype) if self.use_decay else None
        seg = self._segment_length()
        kv = q.new_zeros(b, h, d, v.shape[-1])  # carried state, (B, H, Dh, Dh)
        outs = []
        for start in range(0, length, seg):
            qs, ks, vs = (t[:, :, start : start + seg] for t in (q, k, v))  # (B, H, S, Dh)
            n = qs.shape[2]
            out = causal_linear_attention(qs, ks, vs, self.block_size, lam)  # from a zero state
            first, last = start == 0, start + seg >= length  # the first segment reads a zero state,
            if lam is None:                                  # and nothing reads the last one's update
                if not first:
                    out = out + qs @ kv
                if not last:
                    kv = kv + ks.transpose(-1, -2) @ vs
            else:
                pos = torch.arange(n, device=q.device, dtype=q.dtype)
                log_lam = torch.log(lam).view(1, h, 1, 1)
                if not first:
                    out = out + (qs * torch.exp(log_lam * (pos + 1).view(1, 1, n, 1))) @ kv  # Λ Q KV
                if not last:
                    decayed_k = ks * torch.exp(log_lam * (n - 1 - pos).view(1, 1, n, 1))
                    kv = torch.exp(log_lam * n) * kv + decayed_k.transpose(-1, -2) @ vs
            outs.append(out)
        return torch.cat(outs, dim=2)

    def attend(self, q, k, v, key_padding_mask):
        out = self.linear_core(q, k, v, key_padding_mask)
        return out * torch.rsqrt(out.square().mean(-1, keepdim=True) + self.norm_eps)  # RMS norm per head

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h = self.head_dim, self.num_heads
        if self.causal:  # per block of B: QKᵀ, ·V (2B²Dh each), KᵀV and Q·KV (2B·Dh² each), per segment;
            seg = self._segment_length()  # plus each segment's read (Q·KV) and update (KᵀV) of the carried state
            full, rest = divmod(len_q, seg)
            inside = full * causal_linear_flops(batch, h, seg, d, d, self.block_size)
            if rest:
                inside += causal_linear_flops(batch, h, rest, d, d, self.block_size)
            # the carried state: read (2·n·Dh²) by every segment but the first, updated (2·n·Dh²)
            # by every segment but the last
            read = len_q - min(seg, len_q)
            update = len_q - (rest or min(seg, len_q))
            return inside + batch * h * 2 * (read + update) * d * d
        return batch * h * (2 * len_k * d * d + 2 * len_q * d * d)  # Kᵀ V, then Q (Kᵀ V)

    def state_size(self, seq_len: int) -> int:
        return self.num_heads * self.head_dim * self.head_dim  # KV per head
