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
That loop is `cab.ops.causal_recurrence` with a per-head log decay (H,) and chunk = B. It runs over
segments of `segment_blocks` blocks (1,024 positions by default), the state KV carried from one
segment to the next (`initial_state` / `return_final_state`), so the working set, and the time per
token, do not grow with the length. Memory O(S·B + (S/B)·Dh²) for a segment of S: no L×L.
Feature map: SiLU on q and k (TransNormerLLM). Noncausal: Q (φ(K)ᵀ V) through `linear_attention`
(normalize=False). Reference: `linear_attention_reference` (the masked quadratic form, decayed).

Decay: λ_h = exp(-s_h) with s_h the ALiBi slopes (Press et al. 2022), as the official Lightning
Attention code builds them (`_build_slope_tensor` in OpenNLPLab/lightning-attention, whose reference
kernel weighs the pair (t, s) by exp(-s_h·(t-s))): for H a power of two s_h = 2^(-8h/H), h = 1..H
(H = 4: 2^-2, 2^-4, 2^-6, 2^-8; one head: s = 2^-8, λ ≈ 0.996); for other H the P = 2^⌊log2 H⌋ slopes
of P heads, then the first H - P of the slopes of 2P heads at even indices (ALiBi's interleaving rule,
`alibi_slopes`). The repository's TransNormerLLM layer (examples/module/tnl_attn.py) further scales
the slopes of layer l of N by (1 - l/(N-1) + 1e-5); a cab layer does not know its depth, so that
factor is left out (every layer decays as the first of a stack). An earlier exp(-8(h+1)/H) decayed
far too fast (one head: λ = e^-8, every token but the current forgotten). Decay needs aligned
positions, so it is used only for causal self; the other patterns use no decay, where causal cross
holds trivially (every query reads the same Kᵀ V).

Recurrent form: KV (Dh×Dh) per head, so state_size = H·Dh² (no normaliser: none is carried).
Decode: KV = λ KV + φ(k) vᵀ, o = φ(q)ᵀ KV, then the RMS norm (`causal_recurrence_step` with the per-head
decay), from the prompt's final KV; O(H·Dh²) per token at any context.
"""

from __future__ import annotations

import math

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    causal_recurrence,
    causal_recurrence_flops,
    causal_recurrence_step,
    linear_attention,
    linear_attention_flops,
    linear_attention_reference,
    silu_feature_map,
    zero_padding,
)


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi's head slopes (Press et al. 2022), as Lightning Attention's code builds them.

    H a power of two: 2^(-8h/H) for h = 1..H. Otherwise the slopes of P = 2^⌊log2 H⌋ heads, followed by
    the first H - P of the slopes of 2P heads taken at every other index (0, 2, 4, ...): those lie between
    P's, so the extra heads get decays in between.
    """
    if num_heads & (num_heads - 1) == 0:
        return [2.0 ** (-8.0 * h / num_heads) for h in range(1, num_heads + 1)]
    p = 2 ** math.floor(math.log2(num_heads))
    return alibi_slopes(p) + alibi_slopes(2 * p)[0::2][: num_heads - p]


def lightning_decay(num_heads: int) -> torch.Tensor:
    """λ_h = exp(-s_h), s_h = `alibi_slopes(H)`: (H,) float64."""
    return torch.exp(-torch.tensor(alibi_slopes(num_heads), dtype=torch.float64))


@register_attention(
    "lightning", patterns=set(Pattern),
    family="linear",
    paper={"title": "Lightning Attention-2: A Free Lunch for Handling Unlimited Sequence Lengths in Large Language Models",
           "authors": "Qin et al.", "venue": "arXiv", "year": 2024, "url": "https://arxiv.org/abs/2401.04658"},
)
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
        # log λ_h = -s_h, (H,); a buffer so that it follows the module's dtype and device
        self.register_buffer("log_decay", -torch.tensor(alibi_slopes(num_heads)), persistent=False)

    @property
    def decay(self) -> torch.Tensor:
        """λ_h, (H,)."""
        return torch.exp(self.log_decay)

    def _log_decay(self, dtype) -> torch.Tensor | None:
        return self.log_decay.to(dtype) if self.use_decay else None

    def _segment_length(self) -> int:
        return self.block_size * self.segment_blocks

    def linear_core(self, q, k, v, key_padding_mask):
        """The un-normalised linear attention: q, k, v (B, H, L, Dh) -> (B, H, Lq, Dh)."""
        phi_q, phi_k = silu_feature_map(q), zero_padding(silu_feature_map(k), key_padding_mask)  # padding adds 0
        if not self.causal:
            return linear_attention(phi_q, phi_k, v, normalize=False)  # φ(Q) (φ(K)ᵀ V)
        log_decay, seg = self._log_decay(q.dtype), self._segment_length()
        state, outs = None, []  # KV, (B, H, Dh, Dh), carried across segments
        for start in range(0, q.shape[2], seg):
            qs, ks, vs = (t[:, :, start : start + seg] for t in (phi_q, phi_k, v))  # (B, H, S, Dh)
            out, state = causal_recurrence(qs, ks, vs, log_decay, state, self.block_size, return_final_state=True)
            outs.append(out)
        return torch.cat(outs, dim=2)

    def _rms_norm(self, out):
        return out * torch.rsqrt(out.square().mean(-1, keepdim=True) + self.norm_eps)  # per head (TransNormerLLM)

    def attend(self, q, k, v, key_padding_mask):
        return self._rms_norm(self.linear_core(q, k, v, key_padding_mask))

    def reference_attend(self, q, k, v, key_padding_mask):
        out = linear_attention_reference(silu_feature_map(q), silu_feature_map(k), v, causal=self.causal,
                                         key_padding_mask=key_padding_mask, normalize=False,
                                         log_decay=self._log_decay(q.dtype) if self.causal else None)
        return self._rms_norm(out)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h = self.head_dim, self.num_heads
        if not self.causal:  # φ(K)ᵀ V, then φ(Q) (φ(K)ᵀ V)
            return linear_attention_flops(batch, h, len_q, len_k, d, d, normalize=False)
        decay, seg = ("head" if self.use_decay else "none"), self._segment_length()
        full, rest = divmod(len_q, seg)  # whole segments, then a shorter last one
        total = full * causal_recurrence_flops(batch, h, seg, d, d, self.block_size, decay)
        return total + (causal_recurrence_flops(batch, h, rest, d, d, self.block_size, decay) if rest else 0)

    def state_size(self, seq_len: int) -> int:
        return self.num_heads * self.head_dim * self.head_dim  # KV per head

    # -- decode: KV (B, H, Dh, Dh) ----------------------------------------------------------------
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        phi_q, phi_k, log_decay = silu_feature_map(q), silu_feature_map(k), self._log_decay(q.dtype)
        kv, outs = None, []  # the segments of `linear_core`, keeping the final KV
        for start in range(0, x.shape[1], self._segment_length()):
            qs, ks, vs = (t[:, :, start : start + self._segment_length()] for t in (phi_q, phi_k, v))
            out, kv = causal_recurrence(qs, ks, vs, log_decay, kv, self.block_size, return_final_state=True)
            outs.append(out)
        out = self._rms_norm(torch.cat(outs, dim=2))
        return self.out_proj(self.merge_heads(out)), DecodeState(x.shape[1], kv=kv)

    def step(self, x_t, state):
        q, k, v = (t[:, :, 0] for t in self.self_projections(x_t))  # (B, H, Dh)
        out, state["kv"] = causal_recurrence_step(silu_feature_map(q), silu_feature_map(k), v, state["kv"],
                                                  self._log_decay(q.dtype))
        state.position += 1
        return self.out_proj(self._rms_norm(out).reshape(x_t.shape)), state
