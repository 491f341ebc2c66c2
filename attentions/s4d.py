"""S4D: diagonal state-space layer as a sequence mixer (Gu, Gupta, Goel & Ré, "On the
Parameterization and Initialization of Diagonal State Space Models", NeurIPS 2022), as in CAB.

Per channel h (dim channels), N/2 complex modes n (N = `d_state`), S4D-Lin initialisation
A_n = −½ + iπn, dt ∈ [dt_min, dt_max] log-uniform, C ~ CN(0, 1), zero-order hold:

    Ā = exp(dt·A),  C' = C·(Ā − 1)/A
    recurrent form:   x_t = Ā x_{t−1} + u_t,   y_t = 2·Re(C'·x_t) + D·u_t      (state: N/2 complex)
    convolution form: K_l = 2·Re(Σ_n C'_n Ā_n^l)   (Vandermonde, l < L)        (dim, L)
                      y = u ∗ K + D·u   by FFT of length 2L
    bidirectional (noncausal): a second C gives K^b, and y_i += Σ_{j>i} K^b_{j−i−1} u_j
                      (both kernels in one 2L circular convolution, as S4 does)
    out = GLU(W_out · GELU(y))   (W_out: dim -> 2·dim, the S4D block's output linear)

No queries or keys: the layer mixes one sequence (subclass of AttentionLayer). Padded positions
are zeroed before mixing, so they add nothing. Cross patterns are unsupported (no key/value
sequence). CAB's default d_state is 16.
FLOPs: the matrix products are only W_out, 2·L·dim·2·dim per example, which is what `flops`
states. The large non-matmul work is the kernel (Vandermonde, ~8·dim·(N/2)·L, batch-independent)
and the FFT convolution (~3 FFTs of 2L points per channel: ≈ 3·5·2L·log2(2L)·dim per example),
O(L log L) and not counted by torch's FLOP counter.
State of the recurrent form (causal): dim·N real numbers (N/2 complex per channel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, register_attention
from cab.attention import AttentionLayer

_NO_CROSS = "a state-space mixer has no query/key split: there is no second sequence to read"


@register_attention(
    "s4d",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
)
class S4DMixer(AttentionLayer):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, d_state: int = 16, dt_min: float = 1e-3,
                 dt_max: float = 0.1, kernel_block: int = 256):
        super().__init__(dim, num_heads, pattern)
        self.d_state = d_state
        self.kernel_block = kernel_block
        modes = max(1, d_state // 2)
        copies = 1 if self.causal else 2  # forward (and backward) kernels share A and dt
        self.log_dt = nn.Parameter(torch.rand(dim) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_a_real = nn.Parameter(torch.log(0.5 * torch.ones(dim, modes)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(modes).float().repeat(dim, 1))
        self.c = nn.Parameter(torch.randn(copies, dim, modes, 2) * 0.5**0.5)  # complex C as (re, im)
        self.d = nn.Parameter(torch.randn(dim))
        self.out_proj = nn.Linear(dim, 2 * dim)

    def _discrete(self):
        """Ā = exp(dt·A) and C' = C(Ā − 1)/A, complex: (dim, N/2) and (copies, dim, N/2)."""
        a = torch.complex(-torch.exp(self.log_a_real), self.a_imag)
        dta = torch.exp(self.log_dt)[:, None] * a
        c = torch.view_as_complex(self.c.contiguous())
        return dta, c * (torch.exp(dta) - 1) / a

    def kernel(self, length: int) -> torch.Tensor:
        """K_l = 2·Re(Σ_n C'_n Ā_n^l), (copies, dim, L). The Vandermonde block Ā^j (j < blk) is
        computed once; block i reuses it with the coefficients C'·Ā^(i·blk) (elementwise, no exp
        over the whole (dim, N/2, L) grid, memory O(dim·N·blk))."""
        dta, cp = self._discrete()
        blk = min(self.kernel_block, length)
        j = torch.arange(blk, device=dta.device, dtype=dta.real.dtype)
        vand = torch.exp(dta[:, :, None] * j)  # (dim, N/2, blk)
        v_re, v_im = vand.real, vand.imag
        blocks = []
        for start in range(0, length, blk):
            coef = cp * torch.exp(dta * start)  # (copies, dim, N/2)
            part = coef.real[..., None] * v_re - coef.imag[..., None] * v_im  # Re(coef·Ā^j)
            blocks.append(2 * part.sum(-2))  # elementwise + sum: not a matmul
        return torch.cat(blocks, dim=-1)[..., :length]

    def mix_conv(self, u: torch.Tensor) -> torch.Tensor:
        """Convolution form: u (B, dim, L) -> y (B, dim, L), without D·u."""
        length = u.shape[-1]
        k = self.kernel(length).to(u.dtype)  # (copies, dim, L)
        if self.causal:
            full = F.pad(k[0], (0, length))  # lags 0..L-1
        else:  # lag d > 0 backward uses K^b[d-1], at index 2L − d of the circular kernel
            full = F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))
        n = 2 * length
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(full, n=n), n=n)
        return y[..., :length]

    def mix_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Recurrent form (causal kernel only): x_t = Ā x_{t−1} + u_t, y_t = 2·Re(C'·x_t). u: (B, dim, L)."""
        dta, cp = self._discrete()
        abar = torch.exp(dta)  # (dim, N/2)
        cdt = torch.complex128 if u.dtype == torch.float64 else torch.complex64
        x = torch.zeros(u.shape[0], *abar.shape, dtype=cdt, device=u.device)
        ys = []
        for t in range(u.shape[-1]):
            x = abar.to(cdt) * x + u[:, :, t, None].to(cdt)
            ys.append(2 * (cp[0].to(cdt) * x).real.sum(-1))
        return torch.stack(ys, dim=-1).to(u.dtype)

    def forward(self, x, context=None, key_padding_mask=None):
        self.check_inputs(x, context)
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask[:, :, None], 0.0)
        u = x.transpose(1, 2)  # (B, dim, L)
        y = self.mix_conv(u) + self.d[:, None].to(u.dtype) * u
        y = F.gelu(y).transpose(1, 2)  # (B, L, dim)
        return F.glu(self.out_proj(y), dim=-1)  # (B, L, dim)

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        return 2 * batch * len_q * self.dim * 2 * self.dim

    def state_size(self, seq_len: int) -> int | None:
        return self.dim * self.d_state if self.causal else None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", d_state={self.d_state}"
