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
patterns hold). CAB's default: 16 slots (num_landmarks).
FLOPs per head, noncausal: controls 2·2·Lk·Dh·s; memories 2·2·s·Lk·Dh; read 2·2·Lq·s·Dh.
Causal: controls 2·2·L·Dh·s; per chunk QKᵀ 2C²Dh, slot scores 2C²s, inter reads 2·2·C·s·Dh,
slot-to-position weights 2C²s, P·V 2C²Dh, chunk memories 2·2·C·s·Dh.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention

NEG_INF = float("-inf")


@register_attention("abc", patterns=set(Pattern))
class ABCAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_slots: int = 16, chunk_size: int = 32):
        super().__init__(dim, num_heads, pattern)
        self.num_slots = num_slots
        self.chunk_size = chunk_size
        self.compress_k = nn.Parameter(torch.empty(self.head_dim, num_slots))  # W_k: (Dh, s)
        self.compress_v = nn.Parameter(torch.empty(self.head_dim, num_slots))  # W_v: (Dh, s)
        nn.init.xavier_uniform_(self.compress_k, gain=2**-0.5)
        nn.init.xavier_uniform_(self.compress_v, gain=2**-0.5)

    def attend(self, q, k, v, key_padding_mask):
        q = q * self.head_dim**-0.5
        alpha_k = k @ self.compress_k.to(k.dtype)  # (B, H, Lk, s)
        alpha_v = v @ self.compress_v.to(v.dtype)
        if not self.causal:
            if key_padding_mask is not None:
                pad = key_padding_mask[:, None, :, None]
                alpha_k, alpha_v = alpha_k.masked_fill(pad, NEG_INF), alpha_v.masked_fill(pad, NEG_INF)
            k_mem = torch.softmax(alpha_k, dim=-2).transpose(-1, -2) @ k  # (B, H, s, Dh)
            v_mem = torch.softmax(alpha_v, dim=-2).transpose(-1, -2) @ v  # (B, H, s, Dh)
            return torch.softmax(q @ k_mem.transpose(-1, -2), dim=-1) @ v_mem  # (B, H, Lq, Dh)
        if key_padding_mask is not None:  # padded keys: zero vectors with a negligible control weight
            pad = key_padding_mask[:, None, :, None]
            low = torch.finfo(k.dtype).min / 4
            alpha_k, alpha_v = alpha_k.masked_fill(pad, low), alpha_v.masked_fill(pad, low)
            k, v = k.masked_fill(pad, 0.0), v.masked_fill(pad, 0.0)
        return self._causal(q, k, v, alpha_k, alpha_v)

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

        def pair_weights(alpha, z):  # W[t, j, m] = exp(α_jm − z_tm) for j <= t, else 0
            diff = alpha[..., None, :, :] - z[..., :, None, :]  # (B, H, n, C_t, C_j, s)
            return torch.exp(diff.masked_fill(~causal, NEG_INF))

        def carried(alpha, z, x):  # memory after each chunk, in units of that chunk's last z
            z_end = z[..., -1, :]  # (B, H, n, s)
            chunk_mem = torch.einsum("bhnjm,bhnjd->bhnmd", torch.exp(alpha - z_end[..., None, :]), x)  # (B,H,n,s,D)
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
        scores = torch.einsum("bhntj,bhntjm->bhntm", qc @ kc.transpose(-1, -2), w_k)  # (B, H, n, C, s)
        scores = scores + torch.exp(zk_prev[..., None, :] - zk) * (qc @ mem_k.transpose(-1, -2))
        p = torch.softmax(scores, dim=-1)  # over slots
        w_v = pair_weights(av, zv)
        g = torch.einsum("bhntm,bhntjm->bhntj", p, w_v)  # (B, H, n, C, C)
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

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_slots={self.num_slots}"
