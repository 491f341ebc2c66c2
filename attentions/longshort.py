"""Transformer-LS: long-short transformer (Zhu et al., "Long-Short Transformer: Efficient
Transformers for Language and Vision", NeurIPS 2021), CAB's AttentionLS and CausalLS.

Each query attends, with one softmax, to the union of a short-term window and a long-term
dynamic projection of the sequence; DualLN normalises the two key/value sets separately.

    K = LN_s(x W_k), V = LN_s(x W_v)                               (B, H, L, Dh)
    short-term (noncausal): segments of w = `window_size`, each reads itself and w/2 positions
        on each side (a segment-wise sliding window);  causal: the last w keys, j ∈ (i−w, i]
    long-term (noncausal): P = softmax_over_positions(x W_p)       (B, H, r, L), r = `num_landmarks`
        K̄ = LN_l(P K), V̄ = LN_l(P V)                               (B, H, r, Dh)
    long-term (causal): the sequence is cut into chunks of l = `chunk_size`; each chunk is
        compressed the same way to `chunk_rank` vectors, and query i sees only the chunks that
        end at or before i (no look-ahead)                           (B, H, L/l·rank, Dh)
    O_i = softmax([q_i K̄ᵀ, q_i K_windowᵀ]/√Dh) [V̄; V_window]

Both parts are computed separately with their log-sum-exps and merged (`masked_softmax_lse` for the
long part, `window_attention` for the short part, `merge_softmax_parts`), so no L×L tensor exists
(causal long-term scores are L × L/l·rank: quadratic with a 1/l constant, as in the paper).
Reference: the one masked softmax over the L×(R+L) scores, written out (`reference_forward`).
CAB defaults: noncausal window 15 with 16 landmarks (AttentionLS); causal window 256, chunk 32,
rank 1 (CausalLS); `window_size=None` picks the pattern's default. The relative position terms of
CausalLS are left to the backbone. Cross patterns are unsupported (the window needs aligned
positions, the projection is of the one sequence).
FLOPs: Q/K/V/output projections; W_p 2·L·dim·H·r; per head the compression 2·2·r·L·Dh (causal:
over the padded length), long-term 2·2·L·R·Dh (R compressed rows), the window's blocked products.
Decode (causal): the last w − 1 keys and values, the compressed K̄, V̄ of every complete chunk, and the
current chunk's compression so far (per rank row a softmax-weighted sum of its keys and values and their
log-normaliser, advanced token by token as ABC's memories are); when a chunk completes its rows join
K̄, V̄. A token reads w + ⌊n/l⌋·rank keys under one softmax: O((w + n·rank/l)·dim) per token.
state_size = 2·dim·min(w − 1, n) + 2·dim·rank·⌊n/l⌋ + 2·dim·rank + H·rank.
"""

from __future__ import annotations

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    TokenCache,
    ceil_div,
    keep_mask,
    masked_softmax,
    masked_softmax_lse,
    merge_softmax_parts,
    pad_to_multiple,
    softmax_attention,
    window_attention,
    window_attention_flops,
)

_NO_CROSS = "the short-term window needs aligned positions and the dynamic projection is of one sequence"


@register_attention(
    "longshort",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="low-rank",
    paper={"title": "Long-Short Transformer: Efficient Transformers for Language and Vision",
           "authors": "Zhu et al.", "venue": "NeurIPS", "year": 2021, "url": "https://arxiv.org/abs/2107.02192"},
)
class LongShortAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, window_size: int | None = None,
                 num_landmarks: int = 16, chunk_size: int = 32, chunk_rank: int = 1):
        super().__init__(dim, num_heads, pattern)
        self.window_size = window_size if window_size is not None else (256 if self.causal else 15)
        self.num_landmarks = num_landmarks
        self.chunk_size = chunk_size
        self.chunk_rank = chunk_rank
        self.rank = chunk_rank if self.causal else num_landmarks
        self.dproj = nn.Linear(dim, num_heads * self.rank)  # W_p
        self.ln_short = nn.LayerNorm(dim)
        self.ln_long = nn.LayerNorm(dim)

    # -- pieces --------------------------------------------------------------------------------
    def _window_extent(self) -> tuple[int, int]:
        if self.causal:
            return self.window_size - 1, 0
        ext = max(self.window_size // 2, 1)
        return ext, ext

    def _ln_heads(self, ln: nn.LayerNorm, t: torch.Tensor) -> torch.Tensor:
        return self.split_heads(ln(self.merge_heads(t)))  # LayerNorm over all heads' features

    def memories(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None):
        """q (scaled), K, V (B, H, L, Dh); K̄, V̄ (B, H, R, Dh); the long-term mask (L, R) or None."""
        b, length, _ = x.shape
        h, d, r = self.num_heads, self.head_dim, self.rank
        q = self.split_heads(self.q_proj(x)) * d**-0.5
        k = self.split_heads(self.ln_short(self.k_proj(x)))
        v = self.split_heads(self.ln_short(self.v_proj(x)))
        logits = self.dproj(x).view(b, length, h, r).permute(0, 2, 3, 1)  # (B, H, r, L)
        keep = keep_mask(key_padding_mask, b, length, x.device)  # (B, L)
        if not self.causal:
            p = masked_softmax(logits, keep[:, None, None, :])  # P: a softmax over the real positions
            k_bar, v_bar, long_mask = p @ k, p @ v, None  # (B, H, r, Dh)
        else:
            c = self.chunk_size
            n = ceil_div(length, c)
            logits = pad_to_multiple(logits, c, dim=-1).view(b, h, r, n, c)
            p = masked_softmax(logits, pad_to_multiple(keep, c, dim=-1, value=False).view(b, 1, 1, n, c))  # per chunk
            kc, vc = (pad_to_multiple(t, c).view(b, h, n, c, d) for t in (k, v))
            k_bar = torch.einsum("bhrnc,bhncd->bhnrd", p, kc).reshape(b, h, n * r, d)  # (B, H, n·r, Dh)
            v_bar = torch.einsum("bhrnc,bhncd->bhnrd", p, vc).reshape(b, h, n * r, d)
            chunk_end = (torch.arange(n, device=x.device) + 1) * c - 1
            seen = chunk_end[None, :] <= torch.arange(length, device=x.device)[:, None]  # (L, n): ended by i
            long_mask = seen.repeat_interleave(r, dim=1)  # (L, n·r)
        return q, k, v, self._ln_heads(self.ln_long, k_bar), self._ln_heads(self.ln_long, v_bar), long_mask

    def forward(self, x, context=None, key_padding_mask=None):
        self.check_inputs(x, context)
        q, k, v, k_bar, v_bar, long_mask = self.memories(x, key_padding_mask)
        # the two parts over disjoint keys, each with its log-sum-exp, merged into one softmax over the union
        p_long, lse_long = masked_softmax_lse(q @ k_bar.transpose(-1, -2), long_mask)  # (B, H, L, R)
        before, after = self._window_extent()
        out_short, lse_short = window_attention(
            q, k, v, before, after, block=None if self.causal else self.window_size, exact=self.causal,
            key_padding_mask=key_padding_mask, scale=1.0, return_lse=True,
        )  # (B, H, L, Dh)
        out = merge_softmax_parts([(p_long @ v_bar, lse_long), (out_short, lse_short)])  # (B, H, L, Dh)
        return self.out_proj(self.merge_heads(out))

    def reference_forward(self, x, context=None, key_padding_mask=None):
        """The same attention as one masked softmax over the L×(R+L) scores [q K̄ᵀ, q Kᵀ]."""
        self.check_inputs(x, context)
        q, k, v, k_bar, v_bar, long_mask = self.memories(x, key_padding_mask)
        b, length = x.shape[:2]
        i = torch.arange(length, device=x.device)
        if self.causal:  # the last w keys, j in (i - w, i]
            short = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - self.window_size)
        else:  # segments of w, each reading itself and w/2 keys on either side
            w, ext = self.window_size, max(self.window_size // 2, 1)
            seg = i // w
            short = (i[None, :] >= seg[:, None] * w - ext) & (i[None, :] < seg[:, None] * w + w + ext)
        short = short & keep_mask(key_padding_mask, b, length, x.device)[:, None, None, :]  # (B, 1, L, L)
        long = torch.ones(length, k_bar.shape[2], dtype=torch.bool, device=x.device) if long_mask is None else long_mask
        allowed = torch.cat([long.expand(b, 1, -1, -1), short], dim=-1)  # (B, 1, L, R + L)
        out = softmax_attention(q, torch.cat([k_bar, k], dim=2), torch.cat([v_bar, v], dim=2), allowed, scale=1.0)
        return self.out_proj(self.merge_heads(out))

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        length, d, h = len_q, self.head_dim, self.num_heads
        dproj = 2 * length * self.dim * h * self.rank
        if self.causal:
            n = ceil_div(length, self.chunk_size)
            rows = n * self.rank
            compress = 2 * 2 * self.rank * n * self.chunk_size * d  # over the padded length
        else:
            rows = self.rank
            compress = 2 * 2 * self.rank * length * d
        long = 2 * 2 * length * rows * d  # q K̄ᵀ and P V̄
        before, after = self._window_extent()
        short = window_attention_flops(batch, h, length, d, d, before, after, None if self.causal else self.window_size)
        return batch * (dproj + h * (compress + long)) + short

    def state_size(self, seq_len: int) -> int | None:
        if not self.causal:
            return None
        short = 2 * self.dim * min(self.window_size - 1, seq_len)
        long = 2 * self.dim * self.rank * (seq_len // self.chunk_size)
        return short + long + 2 * self.dim * self.rank + self.num_heads * self.rank  # + the open chunk's sums

    # -- decode: window cache, compressed chunks, the open chunk's running compression -----------------
    def prefill(self, x):
        self.check_decode(x)
        b, length, _ = x.shape
        h, r, c = self.num_heads, self.rank, self.chunk_size
        _, k, v, k_bar, v_bar, _ = self.memories(x, None)
        done = length // c  # complete chunks: their compressed rows are read from now on
        state = DecodeState(length, k=TokenCache(k, self.window_size - 1), v=TokenCache(v, self.window_size - 1),
                            k_long=TokenCache(k_bar[:, :, : done * r]), v_long=TokenCache(v_bar[:, :, : done * r]))
        logits = self.dproj(x[:, done * c :]).view(b, length - done * c, h, r).permute(0, 2, 3, 1)  # (B, H, r, rest)
        z = torch.logsumexp(logits, dim=-1)  # (B, H, r); -inf for an empty open chunk
        p = torch.exp(logits - z[..., None]).nan_to_num(0.0)  # the open chunk's compression weights
        state.update(z=z, k_open=p @ k[:, :, done * c :], v_open=p @ v[:, :, done * c :])  # (B, H, r, Dh)
        return self.forward(x), state

    def step(self, x_t, state):
        i, h, r, c = state.position, self.num_heads, self.rank, self.chunk_size
        q = self.split_heads(self.q_proj(x_t)) * self.head_dim**-0.5  # (B, H, 1, Dh), as `memories`
        k = self.split_heads(self.ln_short(self.k_proj(x_t)))
        v = self.split_heads(self.ln_short(self.v_proj(x_t)))
        alpha = self.dproj(x_t).view(-1, h, r)  # (B, H, r): this token's compression logits
        z = torch.logaddexp(state["z"], alpha)
        for name, t in (("k_open", k), ("v_open", v)):  # M' = e^(z − z') M + e^(α − z') t
            state[name] = torch.exp(state["z"] - z)[..., None] * state[name] + torch.exp(alpha - z)[..., None] * t
        state["z"] = z
        if i % c == c - 1:  # the chunk is complete: its rows, normalised by LN_l, become readable (chunk end <= i)
            state["k_long"].extend(self._ln_heads(self.ln_long, state["k_open"]))
            state["v_long"].extend(self._ln_heads(self.ln_long, state["v_open"]))
            state["z"] = torch.full_like(z, float("-inf"))
            state["k_open"], state["v_open"] = torch.zeros_like(state["k_open"]), torch.zeros_like(state["v_open"])
        keys = torch.cat([state["k_long"].view(), state["k"].extend(k)], dim=2)  # [K̄; the window]
        values = torch.cat([state["v_long"].view(), state["v"].extend(v)], dim=2)
        out = torch.softmax(q @ keys.transpose(-1, -2), dim=-1) @ values  # one softmax over the union
        state.position += 1
        return self.out_proj(self.merge_heads(out)), state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window_size={self.window_size}, rank={self.rank}"
