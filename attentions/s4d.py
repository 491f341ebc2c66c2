"""S4D: diagonal state-space layer as a sequence mixer (Gu, Gupta, Goel & Ré, "On the
Parameterization and Initialization of Diagonal State Space Models", NeurIPS 2022), as in CAB.

Per channel h (dim channels), N/2 complex modes n (N = `d_state`), S4D-Lin initialisation
A_n = −½ + iπn, dt ∈ [dt_min, dt_max] log-uniform, C ~ CN(0, 1), zero-order hold:

    Ā = exp(dt·A),  C' = C·(Ā − 1)/A
    recurrent form:   x_t = Ā x_{t−1} + u_t,   y_t = 2·Re(C'·x_t) + D·u_t      (state: N/2 complex)
    convolution form: y_t = Σ_{s<=t} K_{t−s} u_s + D·u_t,  K_l = 2·Re(Σ_n C'_n Ā_n^l)
    bidirectional (noncausal): a second C gives K^b, and y_i += Σ_{j>i} K^b_{j−i−1} u_j
    out = GLU(W_out · GELU(y))   (W_out: dim -> 2·dim, the S4D block's output linear)

Computed (`mix`) as the convolution in chunks of T = `kernel_block` positions, all matrix products: per
channel, over the chunks of all examples at once (U: (B·L/T, T) inputs),

    y     = U · Toeplitz(K_0..K_{T−1})  +  X · R         (T×T block: the chunk's own inputs)
    W     = U · P,   P[i, n] = Ā_n^(T−i)                 (a chunk's inputs into the N/2 complex states)
    X_j   = Ā^T ⊙ X_{j−1} + W_{j−1}                      (the state before chunk j: L/T small steps)
    R[n, i] = 2·C'_n Ā_n^i                              (the carried state read out, as (Re, −Im) rows)

Noncausal adds the backward kernel to the same products: its lags K^b_(i'−i−1) in the Toeplitz block's
upper triangle, its states (P^b[i, n] = Ā_n^i, carried from the chunks after, R^b[n, i] = 2·C'^b_n Ā_n^(T−1−i))
beside the forward ones. K is needed only for lags < T and Ā^i for i <= T: O(dim·N·T), where the
convolution form this replaces built the O(dim·N·L) Vandermonde kernel and ran an O(L log L) FFT
convolution of 2L points (at 16,384 tokens the layer now runs 2× faster: benchmarks/mamba_scan.py).
`mix_recurrent` is the step-by-step recurrence (the reference: `reference_forward`).

No queries or keys: the layer mixes one sequence (subclass of AttentionLayer). Padded positions
are zeroed before mixing, so they add nothing. Cross patterns are unsupported (no key/value
sequence). CAB's default d_state is 16.
FLOPs (`flops`, forward): W_out, 2·L·dim·2·dim per example, and the chunk products 2·L'·dim·(T + 2·d·N)
(L' = L padded to whole chunks, d = 1 causal, 2 noncausal; 2·L'·dim·T when there is one chunk: no state).
At T = 64, N = 16 that is 192 (causal) or 256 FLOPs per position and channel, less than W_out's 4·dim
at width 512. The operators (Ā^i, the Toeplitz block) are O(dim·N·T), elementwise, batch-independent.
State of the recurrent form (causal): dim·N real numbers (N/2 complex per channel).
Decode: x_t = Ā x_(t−1) + u_t, y_t = 2·Re(C'·x_t) + D·u_t, O(dim·N) per token; prefill keeps the state
after the prompt, x_(L−1) = Σ_s Ā^(L−1−s) u_s, summed chunk by chunk with the same powers Ā^i (i < T).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, register_attention
from cab.attention import AttentionLayer, DecodeState

_NO_CROSS = "a state-space mixer has no query/key split: there is no second sequence to read"


@register_attention(
    "s4d",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="state-space",
    paper={"title": "On the Parameterization and Initialization of Diagonal State Space Models",
           "authors": "Gu et al.", "venue": "NeurIPS", "year": 2022, "url": "https://arxiv.org/abs/2206.11893"},
)
class S4DMixer(AttentionLayer):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, d_state: int = 16, dt_min: float = 1e-3,
                 dt_max: float = 0.1, kernel_block: int = 64):
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

    def _chunk_operators(self, t: int):
        """The per-channel matrices of a chunk of t positions (N = d_state; dirs = 1, or 2 noncausal):

            toeplitz (dim, t, t)       [i', i] = K_(i−i') for i >= i' (noncausal also K^b_(i'−i−1) for i' > i):
                                       the chunk's own inputs
            to_state (dim, t, dirs·N)  [i', (Re, Im) n] = Ā_n^(t−i') (backward: Ā_n^i'): its inputs into the
                                       state carried to the next chunk (backward: to the previous one)
            read     (dim, dirs·N, t)  [(Re, Im) n, i] = (2·Re, −2·Im)(C'_n Ā_n^i) (backward: of
                                       C'^b_n Ā_n^(t−1−i)): the carried state into the outputs
            step     (dim, N/2)        Ā^t: the state across one chunk (complex)
        """
        dta, cp = self._discrete()
        j = torch.arange(t + 1, device=dta.device, dtype=dta.real.dtype)
        mag = torch.exp(dta.real[:, :, None] * j)  # |Ā|^j; Ā^j = |Ā|^j (cos + i sin)(Im(dt·A)·j), j = 0..t
        arg = dta.imag[:, :, None] * j
        pw_re, pw_im = mag * torch.cos(arg), mag * torch.sin(arg)  # (dim, N/2, t+1): real ops, not complex exp
        toeplitz, to_state, read = 0, [], []
        for copy, backward in ((0, False), (1, True))[: 1 if self.causal else 2]:
            c = cp[copy]
            out_re = c.real[:, :, None] * pw_re[:, :, :t] - c.imag[:, :, None] * pw_im[:, :, :t]  # C' Ā^i, i < t
            out_im = c.real[:, :, None] * pw_im[:, :, :t] + c.imag[:, :, None] * pw_re[:, :, :t]
            lags = F.pad(2 * out_re.sum(1), (t - 1 + backward, 0))  # K_l at index t−1+l (backward: K^b_(l−1))
            block = lags.unfold(1, t, 1)[:, :t].flip(1)  # [i', i] = K_(i−i'−backward), zero below
            toeplitz = toeplitz + (block.transpose(1, 2) if backward else block)
            idx = torch.arange(t, device=dta.device) if backward else torch.arange(t, 0, -1, device=dta.device)
            to_state.append(torch.cat([pw_re[:, :, idx], pw_im[:, :, idx]], dim=1).transpose(1, 2))
            out = torch.cat([2 * out_re, -2 * out_im], dim=1)  # (dim, N, t)
            read.append(out.flip(-1) if backward else out)
        step = torch.complex(pw_re[:, :, t], pw_im[:, :, t])
        return toeplitz.contiguous(), torch.cat(to_state, dim=-1).contiguous(), torch.cat(read, dim=1), step

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        """y_t = Σ_(s<=t) K_(t−s) u_s (noncausal: + Σ_(s>t) K^b_(s−t−1) u_s) in chunks of T: u (B, dim, L) ->
        y (B, dim, L), without D·u. Per channel three matrix products over all chunks of all examples at once
        (the chunk's own inputs through the T×T Toeplitz block, its inputs into the states, the states
        carried in read out); between chunks the states move by Ā^T, forward (and backward), L/T small steps."""
        b, dim, length = u.shape
        t = max(1, min(self.kernel_block, length))
        n = -(-length // t)
        toeplitz, to_state, read, step = self._chunk_operators(t)
        toeplitz, to_state, read = (m.to(u.dtype) for m in (toeplitz, to_state, read))
        if n * t > length:
            u = F.pad(u, (0, n * t - length))
        chunks = u.reshape(b, dim, n, t).transpose(0, 1).reshape(dim, b * n, t).contiguous()  # (dim, B·n, T)
        y = torch.bmm(chunks, toeplitz)  # the chunk's own inputs
        if n > 1:
            half, dirs = step.shape[-1], 1 if self.causal else 2
            into = torch.bmm(chunks, to_state).view(dim, b, n, dirs, 2, half)  # each chunk's inputs, into the state
            into = torch.complex(into[..., 0, :], into[..., 1, :])  # (dim, B, n, dirs, N/2)
            zero = torch.zeros_like(into[:, :, 0, 0])
            carried = [[zero] for _ in range(dirs)]  # the state each chunk reads: from the chunks before it
            for i in range(n - 1):  # (and, backward, from the chunks after it)
                carried[0].append(step[:, None] * carried[0][-1] + into[:, :, i, 0])
                if dirs == 2:
                    carried[1].append(step[:, None] * carried[1][-1] + into[:, :, n - 1 - i, 1])
            carried = torch.stack([torch.stack(c if d == 0 else c[::-1], dim=2) for d, c in enumerate(carried)], dim=3)
            carried = torch.stack([carried.real, carried.imag], dim=4).to(u.dtype).view(dim, b * n, dirs * 2 * half)
            y = torch.baddbmm(y, carried, read)  # the states carried in (FlopCounterMode misses baddbmm_)
        return y.view(dim, b, n * t).transpose(0, 1)[:, :, :length]

    def mix_recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """The same by the recurrence, step by step (the reference form): x_t = Ā x_(t−1) + u_t,
        y_t = 2·Re(C'·x_t); noncausal adds x'_t = Ā x'_(t−1) + u_(t+1) from the end, y_t += 2·Re(C'^b·x'_t)."""
        dta, cp = self._discrete()
        abar = torch.exp(dta)  # (dim, N/2)
        cdt = torch.complex128 if u.dtype == torch.float64 else torch.complex64
        length = u.shape[-1]
        x = torch.zeros(u.shape[0], *abar.shape, dtype=cdt, device=u.device)
        ys = []
        for t in range(length):
            x = abar.to(cdt) * x + u[:, :, t, None].to(cdt)
            ys.append(2 * (cp[0].to(cdt) * x).real.sum(-1))
        y = torch.stack(ys, dim=-1)
        if not self.causal:
            x = torch.zeros_like(x)
            back = [torch.zeros_like(ys[0])]
            for t in range(length - 1, 0, -1):  # x' after reading u_t, for position t − 1
                x = abar.to(cdt) * x + u[:, :, t, None].to(cdt)
                back.append(2 * (cp[1].to(cdt) * x).real.sum(-1))
            y = y + torch.stack(back[::-1], dim=-1)
        return y.to(u.dtype)

    def forward(self, x, context=None, key_padding_mask=None):
        return self._layer(x, context, key_padding_mask, self.mix)

    def reference_forward(self, x, context=None, key_padding_mask=None):
        """The layer with the mixing run by the recurrence, step by step (`mix_recurrent`)."""
        return self._layer(x, context, key_padding_mask, self.mix_recurrent)

    def _layer(self, x, context, key_padding_mask, mix):
        self.check_inputs(x, context)
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask[:, :, None], 0.0)
        u = x.transpose(1, 2)  # (B, dim, L)
        y = mix(u) + self.d[:, None].to(u.dtype) * u
        y = F.gelu(y).transpose(1, 2)  # (B, L, dim)
        return F.glu(self.out_proj(y), dim=-1)  # (B, L, dim)

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        t = max(1, min(self.kernel_block, len_q))
        positions = batch * -(-len_q // t) * t  # padded to whole chunks
        states = (1 if self.causal else 2) * self.d_state if positions > t * batch else 0  # one chunk: none carried
        return 2 * batch * len_q * self.dim * 2 * self.dim + 2 * positions * self.dim * (t + 2 * states)

    def state_size(self, seq_len: int) -> int | None:
        return self.dim * 2 * max(1, self.d_state // 2) if self.causal else None  # N/2 complex modes per channel

    # -- decode: x (B, dim, N/2) complex ---------------------------------------------------------
    def _complex_dtype(self, dtype):
        return torch.complex128 if dtype == torch.float64 else torch.complex64

    def final_state(self, u: torch.Tensor) -> torch.Tensor:
        """The recurrent state after reading u (B, dim, L): x = Σ_s Ā^(L−1−s) u_s, (B, dim, N/2) complex.
        In chunks of T: a chunk of r positions adds Σ_i Ā^(r−1−i) u_i (a (B, r) × (r, N/2) product per channel,
        real and imaginary parts) to Ā^r times the state before it; O(L·dim·N), no (dim, N, L) tensor."""
        b, dim, length = u.shape
        dta, _ = self._discrete()
        t = max(1, min(self.kernel_block, length))
        j = torch.arange(t + 1, device=u.device, dtype=dta.real.dtype)
        mag, arg = torch.exp(dta.real[:, :, None] * j), dta.imag[:, :, None] * j  # Ā^j = mag·(cos + i sin)(arg)
        power_re, power_im = (mag * torch.cos(arg)).to(u.dtype), (mag * torch.sin(arg)).to(u.dtype)  # (dim, N/2, T+1)
        into = torch.cat([power_re[:, :, :t], power_im[:, :, :t]], dim=1).flip(-1).transpose(1, 2)  # [i] = Ā^(t-1-i)
        x = torch.zeros(b, dim, power_re.shape[1], dtype=self._complex_dtype(u.dtype), device=u.device)
        for lo in range(0, length, t):
            r = min(t, length - lo)
            w = torch.bmm(u[:, :, lo : lo + r].transpose(0, 1), into[:, t - r :])  # (dim, B, N): Σ_i Ā^(r-1-i) u_i
            w = torch.complex(*w.transpose(0, 1).chunk(2, dim=-1))  # (B, dim, N/2)
            x = torch.complex(power_re[:, :, r], power_im[:, :, r]) * x + w  # Ā^r x + the chunk's inputs
        return x

    def prefill(self, x):
        self.check_decode(x)
        return self.forward(x), DecodeState(x.shape[1], x=self.final_state(x.transpose(1, 2)))

    def step(self, x_t, state):
        u = x_t[:, 0]  # (B, dim)
        dta, cp = self._discrete()
        cdt = self._complex_dtype(u.dtype)
        state["x"] = torch.exp(dta).to(cdt) * state["x"] + u[..., None].to(cdt)  # x_t = Ā x_(t−1) + u_t
        y = 2 * (cp[0].to(cdt) * state["x"]).real.sum(-1).to(u.dtype) + self.d.to(u.dtype) * u  # (B, dim)
        state.position += 1
        return F.glu(self.out_proj(F.gelu(y)), dim=-1)[:, None], state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", d_state={self.d_state}"
