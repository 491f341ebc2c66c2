"""Performer / FAVOR+ (Choromanski et al., "Rethinking Attention with Performers", ICLR 2021).

Positive orthogonal random features approximate the softmax kernel exp(qᵀk/√Dh):

    ω: (H, m, Dh) Gaussian orthogonal rows, drawn once at init (a buffer; eval is deterministic)
    log φ(x) = ωx̂ - ‖x̂‖²/2 - ½·log m,  x̂ = x·Dh^(-1/4)          (B, H, L, m)   `favor_log_features`
    noncausal:  O = φ(Q) [φ(K)ᵀ V] / φ(Q) [φ(K)ᵀ 1]            (m×Dh per head, O(L·m·Dh))
    causal:     O_i = Σ_{j<=i} φ(q_i)·φ(k_j) v_j / Σ_{j<=i} φ(q_i)·φ(k_j)        `linear_attention`

Stabilisers (`favor_query_features`, `favor_key_features`): any constant shared by the keys a query
reads cancels between numerator and denominator, so the output is the unstabilised FAVOR+ estimate.
Queries use their own max over features. Keys, noncausal: the max over all (real) keys, as in the
reference code. Keys, causal self: the reference's global key max would look ahead (CAB disables
causal Performer for that leak), so here c_j = running max over keys <= j (a cummax, never ahead);
key j is stored as exp(log φ(k_j) - c_j) and the difference to a query's c_i becomes the per-position
log decay of `causal_recurrence` (GLA-style scalar gate), exact and overflow-free. Since the stabilised
denominator can be ≪ 1 legitimately, the normalisation's eps is finfo.tiny: exact wherever the
denominator is a normal number (it used to be max(den, tiny), the same there).

CAB's default is 16 features (approx_attn_dim). Causal chunks of 32 (was 64): with m = 16 features the
chunk's C×C products outweigh its m×Dh state work at 64; the core is about 1.5× faster at 16,384 tokens.
Random features are fixed after init; they are not redrawn (set `redraw=True` to draw new ones at
every training forward).
Reference: the quadratic masked form of the unstabilised features (`linear_attention_reference`).
FLOPs per head: features 2·(Lq+Lk)·m·Dh, plus `linear_attention_flops` with F = m. The exp/norm
work is elementwise, O(L·m). State of the recurrent form: S (m×Dh) and z (m) per head, in units of the
running key maximum c, which the state carries too (one number per head): a new key raises c to
c' = max(c, max_f log φ(k)), the state is decayed by exp(c - c') and the key added as exp(log φ(k) - c'),
the same numbers the causal parallel form computes. state_size = H·(m·Dh + m + 1).
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    favor_key_features,
    favor_log_features,
    favor_query_features,
    linear_attention,
    linear_attention_flops,
    linear_attention_reference,
    linear_attention_step,
    orthogonal_gaussian,
)


@register_attention(
    "performer", patterns=set(Pattern),
    family="linear",
    paper={"title": "Rethinking Attention with Performers",
           "authors": "Choromanski et al.", "venue": "ICLR", "year": 2021, "url": "https://arxiv.org/abs/2009.14794"},
)
class PerformerAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_features: int = 16, chunk_size: int = 32,
                 redraw: bool = False):
        super().__init__(dim, num_heads, pattern)
        self.num_features = num_features
        self.chunk_size = chunk_size
        self.redraw = redraw
        self.register_buffer("omega", self._draw())  # (H, m, Dh)

    def _draw(self) -> torch.Tensor:
        return torch.stack([orthogonal_gaussian(self.num_features, self.head_dim) for _ in range(self.num_heads)])

    def attend(self, q, k, v, key_padding_mask):
        if self.redraw and self.training:
            self.omega = self._draw().to(self.omega)
        phi_q = favor_query_features(favor_log_features(q, self.omega))  # (B, H, Lq, m)
        phi_k, log_decay = favor_key_features(favor_log_features(k, self.omega), key_padding_mask, self.causal)
        return linear_attention(phi_q, phi_k, v, causal=self.causal, key_padding_mask=key_padding_mask,
                                eps=torch.finfo(v.dtype).tiny, log_decay=log_decay, chunk_size=self.chunk_size)

    def reference_attend(self, q, k, v, key_padding_mask):
        phi_q = torch.exp(favor_log_features(q, self.omega))  # unstabilised (moderate inputs: no overflow)
        phi_k = torch.exp(favor_log_features(k, self.omega))
        return linear_attention_reference(phi_q, phi_k, v, causal=self.causal, key_padding_mask=key_padding_mask,
                                          eps=torch.finfo(v.dtype).tiny)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h, m = self.head_dim, self.num_heads, self.num_features
        features = batch * h * 2 * (len_q + len_k) * m * d  # x̂ ωᵀ
        return features + linear_attention_flops(batch, h, len_q, len_k, m, d, causal=self.causal,
                                                 chunk_size=self.chunk_size, decay="position")

    def state_size(self, seq_len: int) -> int:
        # S (m×Dh) and z (m) per head; causal also the running key maximum c of the stabiliser
        per_head = self.num_features * self.head_dim + self.num_features
        return self.num_heads * (per_head + (1 if self.causal else 0))

    # -- decode: [S z] (B, H, m, Dh+1) in units of the running key maximum c (B, H) ----------------
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        log_k = favor_log_features(k, self.omega)  # (B, H, L, m)
        phi_k, log_decay = favor_key_features(log_k, None, causal=True)
        out, s = linear_attention(favor_query_features(favor_log_features(q, self.omega)), phi_k, v, causal=True,
                                  eps=torch.finfo(v.dtype).tiny, log_decay=log_decay, chunk_size=self.chunk_size,
                                  return_final_state=True)
        c = log_k.amax(dim=(-2, -1)).detach()  # the running maximum after the last key, (B, H)
        return self.out_proj(self.merge_heads(out)), DecodeState(x.shape[1], s=s, c=c)

    def step(self, x_t, state):
        q, k, v = self.self_projections(x_t)  # (B, H, 1, Dh)
        log_k = favor_log_features(k, self.omega)[:, :, 0]  # (B, H, m)
        c = torch.maximum(state["c"], log_k.amax(-1).detach())  # c' = max(c, this key's maximum)
        phi_k = torch.exp(log_k - c[..., None])  # <= 1, as favor_key_features stores it
        phi_q = favor_query_features(favor_log_features(q, self.omega))[:, :, 0]
        out, state["s"] = linear_attention_step(phi_q, phi_k, v[:, :, 0], state["s"], eps=torch.finfo(v.dtype).tiny,
                                                log_decay=state["c"] - c)  # exp(c - c') <= 1 on the old state
        state["c"] = c
        state.position += 1
        return self.out_proj(out.reshape(x_t.shape)), state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_features={self.num_features}"
