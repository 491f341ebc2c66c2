"""Large kernel attention (LKA), from "Visual Attention Network" (Guo, Lu, Liu, Liu, Cheng, Hu,
CVMJ 2023 / arXiv 2022).

Attention-free: a depthwise convolution (kernel 5), a dilated depthwise convolution (kernel 7,
dilation 3) and a pointwise projection make a gate that multiplies the input, inside VAN's
spatial-attention unit:

    u = GELU(proj_1(x));  a = pw(dw_dilated(dw(u)));  out = proj_2(u ⊙ a)

Port: 2-D k×k depthwise kernels become 1-D kernels of the same size (receptive field 5 + 6·3 = 23
tokens); the unit's inner shortcut (x + ...) is left to the backbone's residual. Causal: every
convolution is padded on the left only, so position i sees inputs ≤ i. Key padding: padded
positions are zeroed before each convolution, which is what a shorter sequence's zero padding does.

Cost: O(L·dim²) for the three projections plus O(L·dim·(5+7)) for the depthwise convolutions —
linear in L; the GELU and the gate product are elementwise and not counted.
Reference (`reference_forward`): each convolution as its sum over taps of shifted inputs.
Decode (causal): each depthwise convolution keeps its last (k−1)·dilation inputs per channel (`state_size`),
and a token's output is one tap sum per convolution: O(dim² + dim·(k + k_d)) per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cab import AttentionLayer, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import keep_mask

_NO_CROSS = "attention-free convolutional gate over one sequence: it has no keys/values to take from a source"


@register_attention(
    "lka",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="attention-free",
    paper={"title": "Visual Attention Network",
           "authors": "Guo et al.", "venue": "CVMJ", "year": 2023, "url": "https://arxiv.org/abs/2202.09741"},
)
class LargeKernelAttention(AttentionLayer):
    """VAN large kernel attention (Guo et al. 2022) on 1-D sequences; `num_heads` is unused."""

    def __init__(
        self, dim: int, num_heads: int, pattern: Pattern, kernel_size: int = 5, dilated_kernel_size: int = 7, dilation: int = 3
    ):
        super().__init__(dim, num_heads, pattern)
        self.kernel_size = kernel_size
        self.dilated_kernel_size = dilated_kernel_size
        self.dilation = dilation
        self.proj_1 = nn.Linear(dim, dim)
        self.conv0 = nn.Conv1d(dim, dim, kernel_size, groups=dim)  # depthwise
        self.conv_spatial = nn.Conv1d(dim, dim, dilated_kernel_size, dilation=dilation, groups=dim)  # dilated depthwise
        self.conv1 = nn.Conv1d(dim, dim, 1)  # pointwise
        self.proj_2 = nn.Linear(dim, dim)

    def _pad(self, t: torch.Tensor, reach: int) -> torch.Tensor:
        # t: (B, dim, L); reach = (kernel-1)·dilation. Causal: all on the left; else split evenly.
        if self.causal:
            return F.pad(t, (reach, 0))
        return F.pad(t, (reach // 2, reach - reach // 2))

    def forward(self, x, context=None, key_padding_mask=None):
        self.check_inputs(x, context)
        u = F.gelu(self.proj_1(x)).transpose(1, 2)  # (B, dim, L)
        if key_padding_mask is not None:  # padded positions are zero before each convolution
            # a product by the keep mask: on CPU several times faster than a masked fill in the (B, dim, L) layout
            keep = keep_mask(key_padding_mask, x.shape[0], x.shape[1]).to(x.dtype)[:, None, :]  # (B, 1, L)
            u = u * keep
        a = self.conv0(self._pad(u, self.kernel_size - 1))  # (B, dim, L)
        if key_padding_mask is not None:
            a = a * keep
        a = self.conv_spatial(self._pad(a, (self.dilated_kernel_size - 1) * self.dilation))  # (B, dim, L)
        a = self.conv1(a)  # (B, dim, L)
        return self.proj_2((u * a).transpose(1, 2))  # (B, L, dim)

    def reference_forward(self, x, context=None, key_padding_mask=None):
        """a_i = b + Σ_t w_t u_{i + t·dilation - left} per channel (zero outside the sequence), for both
        depthwise convolutions; left = all of the reach when causal, half of it otherwise."""
        self.check_inputs(x, context)
        keep = keep_mask(key_padding_mask, x.shape[0], x.shape[1], x.device).to(x.dtype)[..., None]  # (B, L, 1)

        def depthwise(t, conv, dilation):  # t: (B, L, dim)
            taps, length = conv.weight.shape[-1], t.shape[1]
            reach = (taps - 1) * dilation
            left = reach if self.causal else reach // 2
            out = conv.bias.expand_as(t).clone()
            for tap in range(taps):
                shift = tap * dilation - left  # out_i reads t_{i + shift}
                lo, hi = max(0, -shift), min(length, length - shift)
                if lo < hi:
                    out[:, lo:hi] += conv.weight[:, 0, tap] * t[:, lo + shift : hi + shift]
            return out

        u = F.gelu(self.proj_1(x)) * keep  # (B, L, dim)
        a = depthwise(u, self.conv0, 1) * keep
        a = depthwise(a, self.conv_spatial, self.dilation)
        a = a @ self.conv1.weight[:, :, 0].T + self.conv1.bias  # pointwise
        return self.proj_2(u * a)

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        # proj_1, the pointwise conv and proj_2: 2·dim² per token each; depthwise convs: 2·dim·k each
        per_token = 3 * 2 * self.dim * self.dim + 2 * self.dim * (self.kernel_size + self.dilated_kernel_size)
        return batch * len_q * per_token

    def state_size(self, seq_len: int) -> int | None:
        # streaming form: the last (k-1)·dilation inputs of each depthwise convolution, per channel
        if not self.causal:
            return None
        return self.dim * ((self.kernel_size - 1) + (self.dilated_kernel_size - 1) * self.dilation)

    # -- decode: each depthwise convolution's last inputs, (B, dim, reach) ---------------------------
    def prefill(self, x):
        self.check_decode(x)
        u = F.gelu(self.proj_1(x)).transpose(1, 2)  # (B, dim, L), as `forward`
        a = self.conv0(self._pad(u, self.kernel_size - 1))
        spatial_reach = (self.dilated_kernel_size - 1) * self.dilation

        def last(t, reach):  # the last `reach` inputs, zeros before the sequence
            return F.pad(t, (reach, 0))[:, :, t.shape[-1]:]

        state = DecodeState(x.shape[1], u=last(u, self.kernel_size - 1), a=last(a, spatial_reach))
        a = self.conv1(self.conv_spatial(self._pad(a, spatial_reach)))
        return self.proj_2((u * a).transpose(1, 2)), state

    def step(self, x_t, state):
        u = F.gelu(self.proj_1(x_t[:, 0]))  # (B, dim)
        window = torch.cat([state["u"], u[..., None]], dim=-1)  # (B, dim, k): conv0's inputs
        a = (window * self.conv0.weight[:, 0]).sum(-1) + self.conv0.bias
        spatial = torch.cat([state["a"], a[..., None]], dim=-1)  # (B, dim, (k_d-1)·d + 1)
        taps = spatial[..., :: self.dilation]  # every dilation-th input, oldest first: the dilated kernel's taps
        a2 = (taps * self.conv_spatial.weight[:, 0]).sum(-1) + self.conv_spatial.bias
        a3 = a2 @ self.conv1.weight[:, :, 0].T + self.conv1.bias  # pointwise
        state["u"], state["a"] = window[..., 1:], spatial[..., 1:]
        state.position += 1
        return self.proj_2(u * a3)[:, None], state
