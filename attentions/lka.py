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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cab import AttentionLayer, Pattern, register_attention

_NO_CROSS = "attention-free convolutional gate over one sequence: it has no keys/values to take from a source"


@register_attention(
    "lka",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
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
        keep = None if key_padding_mask is None else (~key_padding_mask)[:, None, :].to(x.dtype)  # (B, 1, L)
        u = F.gelu(self.proj_1(x)).transpose(1, 2)  # (B, dim, L)
        if keep is not None:
            u = u * keep
        a = self.conv0(self._pad(u, self.kernel_size - 1))  # (B, dim, L)
        if keep is not None:
            a = a * keep
        a = self.conv_spatial(self._pad(a, (self.dilated_kernel_size - 1) * self.dilation))  # (B, dim, L)
        a = self.conv1(a)  # (B, dim, L)
        return self.proj_2((u * a).transpose(1, 2))  # (B, L, dim)

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        # proj_1, the pointwise conv and proj_2: 2·dim² per token each; depthwise convs: 2·dim·k each
        per_token = 3 * 2 * self.dim * self.dim + 2 * self.dim * (self.kernel_size + self.dilated_kernel_size)
        return batch * len_q * per_token

    def state_size(self, seq_len: int) -> int | None:
        # streaming form: the last (k-1)·dilation inputs of each depthwise convolution, per channel
        if not self.causal:
            return None
        return self.dim * ((self.kernel_size - 1) + (self.dilated_kernel_size - 1) * self.dilation)
