"""Agent Attention (Han et al., 2023, "Agent Attention: On the Integration of Softmax and Linear
Attention"; LeapLabTHU/Agent-Attention), ported to 1-D sequences.

A small set of a agent tokens A (B, H, a, Dh) stands between queries and keys:

    V_A = softmax(A Kᵀ/√Dh) V          # agent aggregation: agents gather from all keys   (a × m)
    O   = softmax(Q Aᵀ/√Dh) V_A        # agent broadcast: each query reads the agents     (n × a)
    O  += DWC(V)                       # depthwise conv on V, kernel 3 (self patterns only)

Cost O((n + m)·a·Dh) per head, never n×m. The agents:
  * self (paper): pooled from the queries, here the mean of the queries in each of a equal bins of the
    real (unpadded) positions (the paper pools a 7×7 grid: a = 49). The pooling is a matrix product
    with an (a × n) bin-membership matrix; bins that a short sequence leaves empty are masked.
  * cross: a learned (H, a, Dh) parameter (as in lucidrains' agent-attention-pytorch), so V_A depends
    only on the source and each query reads it independently: causal cross holds.
Causal self is unsupported: pooled agents mix every query (the prefix test fails), and learned agents
would need a prefix softmax per position. The paper's 2-D position biases are not ported.
Padding: padded keys are masked in the aggregation softmax, padded positions are left out of the
pooled bins, and V is zeroed there before the depthwise conv.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention

from ._part2_common import masked_attend


def pooling_matrix(keep: torch.Tensor, num_agents: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keep: (B, L) bool real positions -> P (B, a, L) with rows = mean over bin a, and (B, a) non-empty."""
    real = keep.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    rank = keep.long().cumsum(-1) - 1  # index among real positions, (B, L)
    bins = torch.div(rank * num_agents, real, rounding_mode="floor")  # (B, L) in [0, a)
    member = (bins[:, None, :] == torch.arange(num_agents, device=keep.device)[None, :, None]) & keep[:, None, :]
    counts = member.sum(-1)  # (B, a)
    return member.to(torch.get_default_dtype()) / counts.clamp(min=1)[..., None], counts > 0


@register_attention(
    "agent",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_SELF: "agents pooled from all queries see the future (learned agents would need a prefix softmax per position)"},
)
class AgentAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_agents: int = 49, dwc_kernel: int = 3):
        super().__init__(dim, num_heads, pattern)
        self.num_agents = num_agents
        self.pooled = not self.pattern.is_cross
        self.dwc_kernel = dwc_kernel if self.pooled else 0  # the conv on V needs aligned positions
        if not self.pooled:
            self.agents = nn.Parameter(torch.randn(num_heads, num_agents, self.head_dim) * self.head_dim**-0.5)
        if self.dwc_kernel:
            self.dwc = nn.Conv1d(dim, dim, dwc_kernel, padding=dwc_kernel // 2, groups=dim)

    def attend(self, q, k, v, key_padding_mask):
        b, h, len_q, d = q.shape
        len_k = k.shape[-2]
        keep_k = torch.ones(b, len_k, dtype=torch.bool, device=q.device) if key_padding_mask is None else ~key_padding_mask
        if self.pooled:
            pool, agent_ok = pooling_matrix(keep_k, self.num_agents)  # (B, a, L), (B, a)
            agents = pool.to(q.dtype)[:, None] @ q  # (B, H, a, Dh): mean query of each bin
        else:
            agents = self.agents.to(q.dtype).expand(b, h, self.num_agents, d)
            agent_ok = None
        scale = 1.0 / math.sqrt(d)
        v_agents = masked_attend(agents, k, v, keep_k[:, None, None, :], scale)  # (B, H, a, Dh)
        allowed = None if agent_ok is None else agent_ok[:, None, None, :]
        out = masked_attend(q, agents, v_agents, allowed, scale)  # (B, H, Lq, Dh)
        if self.dwc_kernel:
            v_flat = self.merge_heads(v * keep_k[:, None, :, None].to(v.dtype))  # (B, L, dim), padding zeroed
            out = out + self.split_heads(self.dwc(v_flat.transpose(1, 2)).transpose(1, 2))
        return out

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        a, d, h = self.num_agents, self.head_dim, self.num_heads
        flops = 4 * len_k * a * d + 4 * len_q * a * d  # aggregation (A Kᵀ, ·V) and broadcast (Q Aᵀ, ·V_A)
        if self.pooled:
            flops += 2 * a * len_q * d  # pooling matrix × Q
        flops *= h
        if self.dwc_kernel:
            flops += 2 * len_k * self.dim * self.dwc_kernel  # depthwise conv
        return batch * flops
