"""Reformer's LSH attention (Kitaev, Kaiser & Levskaya, "Reformer: The Efficient Transformer",
ICLR 2020), with shared query-key projections.

    qk = x W_qk (shared), k̂ = qk/‖qk‖, v = x W_v                 (B, H, L, Dh)
    for each of `num_hashes` rounds r:
        h_r(x) = argmax([xR_r; −xR_r])   R_r: (Dh, nb/2) random rotation      -> bucket per token
        sort tokens by (bucket, position)                                  (B, H, L)
        in sorted order, a block of 32 tokens attends to the tokens of its own bucket among the
        sorted positions from b before to b after the block (b = `bucket_size`; causal: token p
        reads sorted positions [p − 2b, p], earlier positions only), never to
        itself unless it has nothing else (score −5·10⁴), softmax over that set   -> o_r, lse_r
        unsort
    O = Σ_r softmax_r(lse_r) o_r                                     (rounds combined by their lse)

In ops: each round is one `window_attention` over the sorted sequence (labels = buckets, self_score,
return_lse), the rounds are merged by `merge_softmax_parts`. Reference: each round as dense masked
softmax in sorted order (`window_allowed` with the buckets as labels), merged the same way.

nb = 2·⌈n/(2b)⌉ buckets for n real tokens (the paper's L/b; at least 2). Reformer chunks the sorted
sequence (own + previous chunk); a sliding window over the sorted order restricted to the own
bucket is the same idea with a candidate set that depends only on earlier tokens, which is what
causal self needs — with a bucket count that does not depend on the length: `num_buckets`
(default 64 for causal self, as for L = 4096 at b = 64). Rotations come from a generator seeded by
a buffer drawn at init (eval is deterministic); training draws a fresh seed per call. Padded
tokens get their own last bucket and are masked. Memory O(L·b) per round, rounds run one at a
time; no L×L tensor. Defaults: b = 64 (the paper's and the reference implementation's), 2 hash
rounds (the paper evaluates 1 to 8, quality rising with rounds and cost linear in them; with 4+
rounds this CPU implementation is no faster than exact attention at 4K tokens).
Cross patterns are unsupported: shared QK needs one sequence (one hash space).
FLOPs: QK/V/output projections 3·2·L·dim²; per round and head hashing 2·L·Dh·nb/2 and the
windowed products (blocks of 32 over a span of 32 + window); sorting is not a matrix product.
Throughput (benchmarks/results/kernel_throughput.md): below 40% of the matmul rate: each hash round sorts
the sequence by bucket and gathers/scatters it back; sorting and gathers are not matrix products.
Decode (causal, eval): in sorted order a token's window is its bucket's 2b latest earlier tokens and itself,
so per round a ring of 2b slots per (head, bucket) holds the normalised keys and values, with a count of
the tokens written (slot = count mod 2b). A token hashes itself, reads its bucket's ring and its own key
(at the self score), writes itself into the ring; the rounds merge by their lse: O(rounds·(nb + 2b)·dim) per
token. The state has a fixed size, allocated whole: state_size = rounds·H·nb·(2·2b·Dh + 1).
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    keep_mask,
    masked_softmax_lse,
    merge_softmax_parts,
    window_allowed,
    window_attention,
    window_attention_flops,
)

_NO_CROSS = "shared query-key hashing needs one sequence (one hash space for queries and keys)"
SELF_SCORE = -5e4
BLOCK = 32  # query block of the sorted-order window


@register_attention(
    "reformer",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="routed",
    paper={"title": "Reformer: The Efficient Transformer",
           "authors": "Kitaev et al.", "venue": "ICLR", "year": 2020, "url": "https://arxiv.org/abs/2001.04451"},
)
class ReformerAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, bucket_size: int = 64, num_hashes: int = 2,
                 num_buckets: int | None = None):
        super().__init__(dim, num_heads, pattern)
        del self.k_proj  # shared QK: q_proj produces both
        self.bucket_size = bucket_size
        self.num_hashes = num_hashes
        self.num_buckets = num_buckets if num_buckets is not None else (64 if self.causal else None)
        self.register_buffer("hash_seed", torch.randint(0, 2**31 - 1, ()))

    def _buckets(self, n_real: int) -> int:
        if self.num_buckets is not None:
            return max(2, self.num_buckets + self.num_buckets % 2)
        return max(2, 2 * -(-n_real // (2 * self.bucket_size)))

    def _extent(self) -> tuple[int, int]:
        return (2 * self.bucket_size, 0) if self.causal else (self.bucket_size, self.bucket_size)

    def hash_rounds(self, qk: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
        """LSH buckets of every round: qk (B, H, L, Dh), keep (B, L) -> [(B, H, L) ints] per round, padding
        in its own last bucket nb. One random rotation R_r (Dh, nb/2) per round; h(x) = argmax([xR; −xR])."""
        nb = self._buckets(int(keep.sum(1).max()))
        seed = int(self.hash_seed) if not self.training else int(torch.randint(0, 2**31 - 1, ()))
        rot = torch.randn(self.num_hashes, qk.shape[-1], nb // 2, generator=torch.Generator().manual_seed(seed)).to(qk)
        buckets = []
        for r in range(self.num_hashes):
            rotated = qk @ rot[r]  # (B, H, L, nb/2)
            hi, lo = rotated.max(dim=-1), rotated.min(dim=-1)  # argmax over [xR; −xR] without the concat
            bucket = torch.where(hi.values >= -lo.values, hi.indices, lo.indices + nb // 2)
            buckets.append(torch.where(keep[:, None, :], bucket, torch.full_like(bucket, nb)))
        return buckets

    def forward(self, x, context=None, key_padding_mask=None):
        self.check_inputs(x, context)
        b, length, _ = x.shape
        h, d = self.num_heads, self.head_dim
        qk = self.split_heads(self.q_proj(x))  # (B, H, L, Dh), shared queries and keys
        v = self.split_heads(self.v_proj(x))
        k_hat = qk / qk.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # keys are the normalised queries
        pos = torch.arange(length, device=x.device)
        before, after = self._extent()
        base = (torch.arange(b * h, device=x.device) * length).view(b, h, 1)  # row offsets of (B·H·L)
        flat = [t.reshape(b * h * length, -1) for t in (qk, k_hat, v)]
        rounds = []
        for bucket in self.hash_rounds(qk, keep_mask(key_padding_mask, b, length, x.device)):  # (B, H, L)
            order = torch.argsort(bucket * length + pos, dim=-1)  # sort by (bucket, position)
            rows = (order + base).reshape(-1)
            q_s, k_s, v_s = (t.index_select(0, rows).view(b, h, length, -1) for t in flat)
            out_s, lse_s = window_attention(
                q_s, k_s, v_s, before, after, block=BLOCK, exact=self.causal, labels=torch.gather(bucket, 2, order),
                self_score=SELF_SCORE, return_lse=True,
            )  # padding is its own bucket, so the labels also mask it
            inverse = torch.empty_like(order).scatter_(2, order, pos.expand(b, h, length))
            back = (inverse + base).reshape(-1)
            out_r = out_s.reshape(b * h * length, d).index_select(0, back).view(b, h, length, d)  # unsort
            rounds.append((out_r, torch.gather(lse_s, 2, inverse)))
        return self.out_proj(self.merge_heads(merge_softmax_parts(rounds)))  # one softmax over the rounds' keys

    def reference_forward(self, x, context=None, key_padding_mask=None):
        """Each round as dense masked softmax attention in sorted order (the L×L mask of the sorted-order
        window and the buckets), unsorted, rounds combined by their log-sum-exps."""
        self.check_inputs(x, context)
        b, length, _ = x.shape
        qk = self.split_heads(self.q_proj(x))
        v = self.split_heads(self.v_proj(x))
        k_hat = qk / qk.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        pos = torch.arange(length, device=x.device)
        before, after = self._extent()
        rounds = []
        for bucket in self.hash_rounds(qk, keep_mask(key_padding_mask, b, length, x.device)):
            order = torch.argsort(bucket * length + pos, dim=-1)  # (B, H, L)
            q_s, k_s, v_s = (torch.gather(t, 2, order[..., None].expand_as(t)) for t in (qk, k_hat, v))
            allowed = window_allowed(length, before, after, block=BLOCK, exact=self.causal,
                                     labels=torch.gather(bucket, 2, order))  # (B, H, L, L) in sorted order
            scores = (q_s * self.head_dim**-0.5) @ k_s.transpose(-1, -2)
            scores = scores.masked_fill(torch.eye(length, dtype=torch.bool, device=x.device), SELF_SCORE)
            p, lse = masked_softmax_lse(scores, allowed)
            inverse = torch.argsort(order, dim=-1)
            out = torch.gather(p @ v_s, 2, inverse[..., None].expand_as(v_s))
            rounds.append((out, torch.gather(lse, 2, inverse)))
        return self.out_proj(self.merge_heads(merge_softmax_parts(rounds)))

    def projection_flops(self, batch: int, len_q: int, len_k: int) -> int:
        return 2 * batch * self.dim * self.dim * 3 * len_q  # shared QK, V, output

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, nb = self.head_dim, self._buckets(len_q)
        before, after = self._extent()
        hashing = 2 * batch * self.num_heads * len_q * d * (nb // 2)  # x R_r
        window = window_attention_flops(batch, self.num_heads, len_q, d, d, before, after, BLOCK)
        return self.num_hashes * (hashing + window)

    def state_size(self, seq_len: int) -> int | None:
        if not self.causal:
            return None
        ring = 2 * self.bucket_size  # the window before a token in sorted order: its bucket's latest 2b
        return self.num_hashes * self.num_heads * self._buckets(seq_len) * (2 * ring * self.head_dim + 1)

    # -- decode: per round, a ring of the latest 2b keys and values per (head, bucket) ---------------------
    def _rotations(self, like: torch.Tensor, nb: int) -> torch.Tensor:
        """The rounds' rotations (rounds, Dh, nb/2), as `hash_rounds` draws them in eval mode."""
        generator = torch.Generator().manual_seed(int(self.hash_seed))
        return torch.randn(self.num_hashes, self.head_dim, nb // 2, generator=generator).to(like)

    @staticmethod
    def _hash(qk: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        """argmax([xR; −xR]) as `hash_rounds` takes it: qk (..., Dh) -> buckets (...)."""
        rotated = qk @ rotation
        hi, lo = rotated.max(dim=-1), rotated.min(dim=-1)
        return torch.where(hi.values >= -lo.values, hi.indices, lo.indices + rotation.shape[-1])

    def prefill(self, x):
        self.check_decode(x)
        b, length, _ = x.shape
        h, d, ring = self.num_heads, self.head_dim, 2 * self.bucket_size
        qk, v = self.split_heads(self.q_proj(x)), self.split_heads(self.v_proj(x))  # (B, H, L, Dh)
        k_hat = qk / qk.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        nb = self._buckets(length)
        pos = torch.arange(length, device=x.device)
        state = DecodeState(length)
        for r, rotation in enumerate(self._rotations(qk, nb)):
            bucket = self._hash(qk, rotation)  # (B, H, L)
            counts = torch.zeros(b, h, nb, dtype=torch.long, device=x.device).scatter_add_(2, bucket, torch.ones_like(bucket))
            order = torch.argsort(bucket * length + pos, dim=-1)  # sorted by (bucket, position)
            sorted_bucket = bucket.gather(2, order)
            starts = torch.cumsum(counts, dim=2) - counts  # rank of each bucket's first token
            ordinal = torch.arange(length, device=x.device) - starts.gather(2, sorted_bucket)  # within its bucket
            kept = ordinal >= counts.gather(2, sorted_bucket) - ring  # its bucket's latest 2b
            slot = torch.where(kept, sorted_bucket * ring + ordinal % ring, nb * ring)  # the rest: a spare row
            rows = []
            for t in (k_hat, v):
                t_sorted = t.gather(2, order[..., None].expand_as(t))
                buf = t.new_zeros(b, h, nb * ring + 1, d).scatter_(2, slot[..., None].expand_as(t_sorted), t_sorted)
                rows.append(buf[:, :, :-1].view(b, h, nb, ring, d))
            state.update({f"k{r}": rows[0], f"v{r}": rows[1], f"count{r}": counts})
        return self.forward(x), state

    def step(self, x_t, state):
        d, ring = self.head_dim, 2 * self.bucket_size
        qk, v = self.split_heads(self.q_proj(x_t))[:, :, 0], self.split_heads(self.v_proj(x_t))[:, :, 0]  # (B, H, Dh)
        k_hat = qk / qk.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        nb = state["count0"].shape[-1]
        rounds = []
        for r, rotation in enumerate(self._rotations(qk, nb)):
            bucket = self._hash(qk, rotation)[..., None]  # (B, H, 1)
            count = state[f"count{r}"].gather(2, bucket)  # (B, H, 1): tokens already in the bucket
            at = bucket[..., None, None].expand(-1, -1, 1, ring, d)
            keys = state[f"k{r}"].gather(2, at)[:, :, 0]  # (B, H, 2b, Dh): the bucket's ring
            values = state[f"v{r}"].gather(2, at)[:, :, 0]
            filled = torch.arange(ring, device=x_t.device) < count  # (B, H, 2b)
            scores = ((qk * d**-0.5)[:, :, None] @ keys.transpose(-1, -2))[:, :, 0]  # (B, H, 2b)
            scores = torch.cat([scores, scores.new_full(scores.shape[:-1] + (1,), SELF_SCORE)], dim=-1)
            allowed = torch.cat([filled, torch.ones_like(filled[..., :1])], dim=-1)  # the ring's tokens and itself
            p, lse = masked_softmax_lse(scores, allowed)
            out = (p[..., :ring, None] * values).sum(-2) + p[..., ring:] * v  # (B, H, Dh)
            rounds.append((out[:, :, None], lse[:, :, None]))
            slot = (bucket * ring + count % ring)[..., None].expand(-1, -1, 1, d)  # the ring's oldest slot
            state[f"k{r}"].view(*keys.shape[:2], nb * ring, d).scatter_(2, slot, k_hat[:, :, None])
            state[f"v{r}"].view(*keys.shape[:2], nb * ring, d).scatter_(2, slot, v[:, :, None])
            state[f"count{r}"].scatter_add_(2, bucket, torch.ones_like(bucket))
        state.position += 1
        return self.out_proj(self.merge_heads(merge_softmax_parts(rounds))), state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bucket_size={self.bucket_size}, num_hashes={self.num_hashes}"
