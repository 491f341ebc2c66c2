"""ABC: Attention with Bounded-memory Control (Peng et al., ACL 2022), ABC_MLP as in CAB.

n keys and values are written into s = `num_slots` memory slots by learned control weights:

    α^k = K W_k,  α^v = V W_v                                 (B, H, L, s)   W: (Dh, s), shared by heads
    noncausal / cross:
        K̃ = softmax_j(α^k)ᵀ K,  Ṽ = softmax_j(α^v)ᵀ V          (B, H, s, Dh)  (softmax over positions)
        O = softmax(Q K̃ᵀ/√Dh) Ṽ                               (B, H, Lq, Dh)
    causal self: the memories are running, normalised prefix sums (the paper's causal ABC):
        z_t = logcumsumexp_{j<=t} α_j                           (per slot)
        K̃_t = Σ_{j<=t} exp(α^k_j − z^k_t) k_j,  Ṽ_t likewise with α^v
        o_t = softmax(q_t K̃_tᵀ/√Dh) Ṽ_t
        recurrently: K̃_t = exp(z_{t-1} − z_t) K̃_{t-1} + exp(α_t − z_t) k_t  (state: s×Dh twice + z)

CAB's causal branch weights only token t's own key/value (no running memory); this one keeps the
memory. Causal computation is chunked (C = `chunk_size`): inside a chunk the pairwise weights
W[t, j, m] = exp(α_jm − z_tm) <= 1 (a (C, C, s) tensor per chunk), across chunks a carried memory
in units of the chunk end's z (every exponent <= 0: no overflow). No L×L tensor; memory
O(L·C·s). Cross: slots come from the source and each query reads them independently (both cross
patterns hold). CAB's default: 16 slots (num_landmarks). Noncausal: `masked_softmax` over the real
positions for the memories, `softmax_attention` for the read. Reference: the recurrence step by step.

Why not `cab.ops.causal_recurrence`: the value memory is one (per-slot decay g = z_{t-1} − z_t, keys
exp(α^v_t − z^v_t), values v_t, queries p_t), but the key memory is read as K̃_t q_t, a vector over
the slots, i.e. over the decayed index, which the op's read Sᵀq (summing over it) cannot give; so
both memories keep this one chunked form. Speed: per position it builds 2·C·s pairwise weights
(a subtraction, a mask and an exponential each) and reads them with 1×C products, elementwise work
that the FLOP count (matrix products) does not see; at 16,384 tokens (dim 512, 8 heads, one thread)
the causal layer runs at under a third (≈28%) of the machine's matmul rate, below the zoo's 40%
target. A matmul-only form exp(α_j − r)·exp(r − z_t) with one reference r per chunk would overflow
or lose the weights when a control logit jumps by more than ~80 within a chunk, which the exact form
allows, so it is not used. C = 16 (was 32: half the pairwise work per position, for twice the L/C
steps of the carried memory) and the pairwise reads as batched products (were einsums that copied
the weights): the causal layer is about 2× faster than before.
FLOPs per head, noncausal: controls 2·2·Lk·Dh·s; memories 2·2·s·Lk·Dh; read 2·2·Lq·s·Dh.
Causal: controls 2·2·L·Dh·s; per chunk QKᵀ 2C²Dh, slot scores 2C²s, inter reads 2·2·C·s·Dh,
slot-to-position weights 2C²s, P·V 2C²Dh, chunk memories 2·2·C·s·Dh.
Decode (causal): the memories and z after the prompt (a softmax over its positions per slot: the
noncausal memories of the prompt), then the recurrence above one token at a time, O(H·s·Dh) per token:
state_size = H·(2·s·Dh + 2·s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import masked_softmax, softmax_attention, zero_padding

NEG_INF = float("-inf")


@register_attention(
    "abc", patterns=set(Pattern),
    family="low-rank",
    paper={"title": "ABC: Attention with Bounded-memory Control",
           "authors": "Peng et al.", "venue": "ACL", "year": 2022, "url": "https://arxiv.org/abs/2110.02488"},
)
class ABCAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_slots: int = 16, chunk_size: int = 16):
        super().__init__(dim, num_heads, pattern)
        self.num_slots = num_slots
        self.chunk_size = chunk_size
        self.compress_k = nn.Parameter(torch.empty(self.head_dim, num_slots))  # W_k: (Dh, s)
        self.compress_v = nn.Parameter(torch.empty(self.head_dim, num_slots))  # W_v: (Dh, s)
        nn.init.xavier_uniform_(self.compress_k, gain=2**-0.5)
        nn.init.xavier_uniform_(self.compress_v, gain=2**-0.5)

    def attend(self, q, k, v, key_padding_mask):
        alpha_k = k @ self.compress_k.to(k.dtype)  # (B, H, Lk, s)
        alpha_v = v @ self.compress_v.to(v.dtype)
        if not self.causal:  # the memories: a softmax over the real positions, per slot
            keep = None if key_padding_mask is None else ~key_padding_mask[:, None, :, None]  # (B, 1, Lk, 1)
            k_mem = masked_softmax(alpha_k, keep, dim=-2).transpose(-1, -2) @ k  # (B, H, s, Dh)
            v_mem = masked_softmax(alpha_v, keep, dim=-2).transpose(-1, -2) @ v  # (B, H, s, Dh)
            return softmax_attention(q, k_mem, v_mem)  # softmax(Q K̃ᵀ/√Dh) Ṽ: (B, H, Lq, Dh)
        if key_padding_mask is not None:  # padded keys: zero vectors with a negligible control weight
            pad = key_padding_mask[:, None, :, None]
            low = torch.finfo(k.dtype).min / 4
            alpha_k, alpha_v = alpha_k.masked_fill(pad, low), alpha_v.masked_fill(pad, low)
            k, v = zero_padding(k, key_padding_mask), zero_padding(v, key_padding_mask)
        return self._causal(q * self.head_dim**-0.5, k, v, alpha_k, alpha_v)

    def reference_attend(self, q, k, v, key_padding_mask):
        """The recurrence step by step: z_t = logaddexp(z_{t-1}, α_t), K̃_t = e^{z_{t-1}-z_t} K̃_{t-1} +
        e^{α_t-z_t} k_t (Ṽ likewise), a padded key skipped; causal: o_t = softmax(q_t K̃_tᵀ/√Dh) Ṽ_t,
        noncausal: every query reads the last memories (the softmax over all positions)."""
        b, h, len_k, d = k.shape
        alpha_k, alpha_v = k @ self.compress_k.to(k.dtype), v @ self.compress_v.to(v.dtype)  # (B, H, Lk, s)
        z_k = z_v = k.new_full((b, h, self.num_slots), NEG_INF)
        mem_k, mem_v = k.new_zeros(b, h, self.num_slots, d), k.new_zeros(b, h, self.num_slots, d)
        outs = []
        for t in range(len_k):
            new_zk, new_zv = torch.logaddexp(z_k, alpha_k[:, :, t]), torch.logaddexp(z_v, alpha_v[:, :, t])
            carry_k, carry_v = torch.exp(z_k - new_zk)[..., None], torch.exp(z_v - new_zv)[..., None]  # (B, H, s, 1)
            write_k = torch.exp(alpha_k[:, :, t] - new_zk)[..., None]
            write_v = torch.exp(alpha_v[:, :, t] - new_zv)[..., None]
            new_mk = carry_k * mem_k + write_k * k[:, :, t, None]  # (B, H, s, Dh)
            new_mv = carry_v * mem_v + write_v * v[:, :, t, None]
            if key_padding_mask is None:
                z_k, z_v, mem_k, mem_v = new_zk, new_zv, new_mk, new_mv
            else:  # a padded key leaves z and the memories as they were
                real = ~key_padding_mask[:, t, None, None]  # (B, 1, 1)
                z_k, z_v = torch.where(real, new_zk, z_k), torch.where(real, new_zv, z_v)
                mem_k, mem_v = torch.where(real[..., None], new_mk, mem_k), torch.where(real[..., None], new_mv, mem_v)
            if self.causal:
                outs.append(softmax_attention(q[:, :, t, None], mem_k, mem_v))  # (B, H, 1, Dh)
        return torch.cat(outs, dim=2) if self.causal else softmax_attention(q, mem_k, mem_v)

    def _causal(self, q, k, v, alpha_k, alpha_v):
        b, h, length, d = q.shape
        s = self.num_slots
        c = min(self.chunk_size, length)
        pad = (-length) % c
        z_k = torch.logcumsumexp(alpha_k, dim=2)  # (B, H, L, s)
        z_v = torch.logcumsumexp(alpha_v, dim=2)
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            low = torch.finfo(q.dtype).min / 4
            alpha_k, alpha_v = F.pad(alpha_k, (0, 0, 0, pad), value=low), F.pad(alpha_v, (0, 0, 0, pad), value=low)
            z_k, z_v = F.pad(z_k, (0, 0, 0, pad), mode="replicate"), F.pad(z_v, (0, 0, 0, pad), mode="replicate")
        n = (length + pad) // c
        qc, kc, vc = (t.reshape(b, h, n, c, d) for t in (q, k, v))
        ak, av = alpha_k.reshape(b, h, n, c, s), alpha_v.reshape(b, h, n, c, s)
        zk, zv = z_k.reshape(b, h, n, c, s), z_v.reshape(b, h, n, c, s)
        pos = torch.arange(c, device=q.device)
        causal = (pos[:, None] >= pos[None, :])[..., None]  # (C, C, 1): j <= t

        def pair_weights(alpha, z):  # W[t, j, m] = exp(α_jm − z_tm) for j <= t, else 0: (B, H, n, C_t, C_j, s)
            w = alpha[..., None, :, :] - z[..., :, None, :]
            return w.masked_fill_(~causal, NEG_INF).exp_()  # in place: the largest tensors of the layer

        def carried(alpha, z, x):  # memory after each chunk, in units of that chunk's last z
            z_end = z[..., -1, :]  # (B, H, n, s)
            chunk_mem = torch.exp(alpha - z_end[..., None, :]).transpose(-1, -2) @ x  # (B, H, n, s, D)
            z_prev = torch.cat([z[:, :, :1, 0, :], z_end[:, :, :-1]], dim=2)  # reference before each chunk
            carry = torch.exp(z_prev - z_end)  # <= 1
            states, state = [], torch.zeros(b, h, s, x.shape[-1], dtype=x.dtype, device=x.device)
            for i in range(n):
                states.append(state)
                state = state * carry[:, :, i, :, None] + chunk_mem[:, :, i]
            return torch.stack(states, dim=2), z_prev  # (B, H, n, s, D), (B, H, n, s)

        mem_k, zk_prev = carried(ak, zk, kc)
        mem_v, zv_prev = carried(av, zv, vc)
        w_k = pair_weights(ak, zk)  # (B, H, n, C, C, s)
        # slot scores Σ_j (q_t·k_j) W[t, j, m]: one (1, C) @ (C, s) product per position (no copy of W)
        scores = ((qc @ kc.transpose(-1, -2)).unsqueeze(-2) @ w_k).squeeze(-2)  # (B, H, n, C, s)
        scores = scores + torch.exp(zk_prev[..., None, :] - zk) * (qc @ mem_k.transpose(-1, -2))
        p = torch.softmax(scores, dim=-1)  # over slots
        w_v = pair_weights(av, zv)
        g = (w_v @ p.unsqueeze(-1)).squeeze(-1)  # Σ_m p_tm W[t, j, m]: (B, H, n, C, C)
        out = g @ vc + (p * torch.exp(zv_prev[..., None, :] - zv)) @ mem_v  # (B, H, n, C, D)
        return out.reshape(b, h, n * c, d)[:, :, :length]

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, s = self.head_dim, self.num_slots
        if not self.causal:
            per_head = 2 * 2 * len_k * d * s + 2 * 2 * s * len_k * d + 2 * 2 * len_q * s * d
            return batch * self.num_heads * per_head
        c = min(self.chunk_size, len_q)
        n = -(-len_q // c)
        per_chunk = 2 * c * c * d + 2 * c * c * s + 2 * 2 * c * s * d + 2 * c * c * s + 2 * c * c * d + 2 * 2 * c * s * d
        return batch * self.num_heads * (2 * 2 * len_q * d * s + n * per_chunk)

    def state_size(self, seq_len: int) -> int:
        return self.num_heads * (2 * self.num_slots * self.head_dim + 2 * self.num_slots)

    # -- decode: the memories K̃, Ṽ (B, H, s, Dh) and their normalisers z (B, H, s) ----------------
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        out = self.attend(q, k, v, None)
        alpha_k, alpha_v = k @ self.compress_k.to(k.dtype), v @ self.compress_v.to(v.dtype)  # (B, H, L, s)
        state = DecodeState(x.shape[1], z_k=torch.logsumexp(alpha_k, dim=2), z_v=torch.logsumexp(alpha_v, dim=2),
                            mem_k=torch.softmax(alpha_k, dim=2).transpose(-1, -2) @ k,  # Σ_j e^(α_j − z) k_j
                            mem_v=torch.softmax(alpha_v, dim=2).transpose(-1, -2) @ v)
        return self.out_proj(self.merge_heads(out)), state

    def step(self, x_t, state):
        q, k, v = self.self_projections(x_t)  # (B, H, 1, Dh)
        for name, x, w in (("k", k, self.compress_k), ("v", v, self.compress_v)):
            alpha = (x @ w.to(x.dtype))[:, :, 0]  # (B, H, s): this token's control logits
            z = torch.logaddexp(state[f"z_{name}"], alpha)
            # M' = e^(z − z') M + e^(α − z') x: the memory stays a softmax-weighted sum over the positions
            state[f"mem_{name}"] = (torch.exp(state[f"z_{name}"] - z)[..., None] * state[f"mem_{name}"]
                                    + torch.exp(alpha - z)[..., None] * x)
            state[f"z_{name}"] = z
        out = softmax_attention(q, state["mem_k"], state["mem_v"])  # softmax(q K̃ᵀ/√Dh) Ṽ: (B, H, 1, Dh)
        state.position += 1
        return self.out_proj(self.merge_heads(out)), state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_slots={self.num_slots}"
