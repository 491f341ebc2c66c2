"""Agent Attention (Han et al., 2023, "Agent Attention: On the Integration of Softmax and Linear
Attention"; LeapLabTHU/Agent-Attention), ported to 1-D sequences.

A small set of a agent tokens A (B, H, a, Dh) stands between queries and keys:

    V_A = softmax(A Kᵀ/√Dh) V          # agent aggregation: agents gather from all keys   (a × m)
    O   = softmax(Q Aᵀ/√Dh) V_A        # agent broadcast: each query reads the agents     (n × a)
    O  += DWC(V)                       # depthwise conv on V, kernel 3 (self patterns only)

Cost O((n + m)·a·Dh) per head, never n×m. The agents:
  * self (paper): pooled from the queries, the mean of the queries in each of a segments of the real
    (unpadded) tokens, by the binning rule of `cab.ops.pooling` (the paper pools a 7×7 grid: a = 49);
    a sequence shorter than a repeats its tokens, so every agent is defined. The pooling is a matrix
    product with the (a × n) averaging matrix `segment_weights`.
  * cross: a learned (H, a, Dh) parameter (as in lucidrains' agent-attention-pytorch), so V_A depends
    only on the source and each query reads it independently: causal cross holds.
Causal self is unsupported: pooled agents mix every query (the prefix test fails), and learned agents
would need a prefix softmax per position. The paper's 2-D position biases are not ported.
Padding: padded keys are masked in the aggregation softmax, padded positions are left out of the
pooled segments, and V is zeroed there before the depthwise conv.
Reference (`reference_attend`): the n × m matrix softmax(Q Aᵀ) softmax(A Kᵀ) formed, agents pooled by
loops, the conv as its sum over taps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import (
    allowed_mask,
    keep_mask,
    masked_softmax,
    segment_means_reference,
    segment_weights,
    softmax_attention,
    softmax_attention_flops,
    zero_padding,
)


@register_attention(
    "agent",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_SELF: "agents pooled from all queries see the future (learned agents would need a prefix softmax per position)"},
    family="low-rank",
    paper={"title": "Agent Attention: On the Integration of Softmax and Linear Attention",
           "authors": "Han et al.", "venue": "ECCV", "year": 2024, "url": "https://arxiv.org/abs/2312.08874"},
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

    def agent_tokens(self, q, keep):
        """(B, H, a, Dh): the segment means of the queries (self), or the learned agents (cross)."""
        b, h, _, d = q.shape
        if self.pooled:
            return segment_weights(keep, self.num_agents, q.dtype)[:, None] @ q  # (B, 1, a, L) @ (B, H, L, Dh)
        return self.agents.to(q.dtype).expand(b, h, self.num_agents, d)

    def attend(self, q, k, v, key_padding_mask):
        b, h, len_q, d = q.shape
        len_k = k.shape[-2]
        keep = keep_mask(key_padding_mask, b, len_k, q.device)  # (B, Lk)
        agents = self.agent_tokens(q, keep)  # (B, H, a, Dh)
        allowed = allowed_mask(key_padding_mask, self.num_agents, len_k)  # (B, 1, 1, Lk) real keys, or None
        v_agents = softmax_attention(agents, k, v, allowed)  # aggregation (B, H, a, Dh)
        # broadcast: every agent is defined (an example without real tokens has V_A = 0), so nothing is masked
        out = softmax_attention(q, agents, v_agents)  # (B, H, Lq, Dh)
        if self.dwc_kernel:
            v_flat = self.merge_heads(zero_padding(v, key_padding_mask))  # (B, L, dim)
            out = out + self.split_heads(self.dwc(v_flat.transpose(1, 2)).transpose(1, 2))
        return out

    def reference_attend(self, q, k, v, key_padding_mask):
        """O = softmax(Q Aᵀ/√Dh) softmax(A Kᵀ/√Dh) V with the Lq × Lk product formed, + Σ_t w_t V_(i+t-k//2)."""
        b, h, len_q, d = q.shape
        len_k = k.shape[-2]
        keep = keep_mask(key_padding_mask, b, len_k, q.device)
        if self.pooled:
            agents = segment_means_reference(q, keep, self.num_agents)[0]  # (B, H, a, Dh)
        else:
            agents = self.agents.to(q.dtype).expand(b, h, self.num_agents, d)
        scale = 1.0 / math.sqrt(d)
        broadcast = torch.softmax(q @ agents.transpose(-1, -2) * scale, dim=-1)  # (B, H, Lq, a)
        aggregation = masked_softmax(agents @ k.transpose(-1, -2) * scale, keep[:, None, None, :])  # (B, H, a, Lk)
        out = (broadcast @ aggregation) @ v  # (B, H, Lq, Lk) @ (B, H, Lk, Dh)
        if self.dwc_kernel:
            vz = self.merge_heads(v * keep[:, None, :, None].to(v.dtype))  # (B, L, dim)
            conv = self.dwc.bias.to(v.dtype).expand(b, len_k, self.dim).clone()
            half = self.dwc_kernel // 2
            for t in range(self.dwc_kernel):
                shift = t - half
                lo, hi = max(0, -shift), min(len_k, len_k - shift)
                conv[:, lo:hi] += self.dwc.weight[:, 0, t].to(v.dtype) * vz[:, lo + shift : hi + shift]
            out = out + self.split_heads(conv)
        return out

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        a, d, h = self.num_agents, self.head_dim, self.num_heads
        flops = softmax_attention_flops(batch, h, a, len_k, d, d)  # aggregation: A Kᵀ, ·V
        flops += softmax_attention_flops(batch, h, len_q, a, d, d)  # broadcast: Q Aᵀ, ·V_A
        if self.pooled:
            flops += batch * h * 2 * a * len_q * d  # averaging matrix × Q
        if self.dwc_kernel:
            flops += batch * 2 * len_k * self.dim * self.dwc_kernel  # depthwise conv
        return flops
