"""Feature maps φ of kernelised (linear) attention, each with the identity that defines it.

    elu_feature_map      φ(x) = elu(x) + 1 > 0                            linear (Katharopoulos et al. 2020)
    relu_feature_map     φ(x) = ReLU(x) >= 0                              cosFormer's base map
    silu_feature_map     φ(x) = SiLU(x) (not positive)                    Lightning / TransNormerLLM
    taylor_feature_map   φ(a)·φ(b) = 1 + s + s²/2, s = a·b/√f             Based (2nd-order Taylor of exp)
    cosformer_feature_map  φ(q_i)·φ(k_j) = ReLU(q_i)·ReLU(k_j) cos(π(i-j)/2M)    cosFormer
    favor_*              E_ω[φ(q)·φ(k)] = exp(q·k/√D) (positive random features)  Performer (FAVOR+)

Shapes: x (..., L, D) -> (..., L, F); the maps act on the last dim (cosFormer also on positions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .recurrence import log_decay_from_cumulative


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1: positive, so the normaliser Σ φ(q)·φ(k) > 0 (Katharopoulos et al. 2020)."""
    return F.elu(x) + 1


def relu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """ReLU(x): nonnegative (cosFormer's base map; the normaliser can be 0, see linear.py's eps)."""
    return F.relu(x)


def silu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """SiLU(x) (TransNormerLLM / Lightning): not nonnegative, so used without normalisation."""
    return F.silu(x)


# ---------------------------------------------------------------------------------------------
# Based: 2nd-order Taylor features


def taylor_feature_size(f: int) -> int:
    """Number of Taylor features for input dim f: 1 + f + f(f+1)/2 (153 for f = 16)."""
    return 1 + f + f * (f + 1) // 2


def taylor_feature_map(x: torch.Tensor) -> torch.Tensor:
    """x: (..., f) -> (..., 1 + f + f(f+1)/2) with φ(a)·φ(b) = 1 + s + s²/2, s = a·b/√f.

    φ(x) = [1, x/f^{1/4}, vech(x xᵀ)/√(2f)]: the upper triangle of x xᵀ, off-diagonal terms ×√2 folded
    in (fla's TaylorFeatureMap), so f(f+1)/2 second-order features instead of Zoology's f².
    """
    f = x.shape[-1]
    # x_i x_j / √f for i < j and x_i² / √(2f) on the diagonal: Σ pairs = (a·b)² / (2f). Row i of the upper
    # triangle is x_i · (x[i:] ⊙ coef[:f-i]), coef = [1/√(2f), 1/√f, ..., 1/√f]: one broadcast product per
    # row (gathering the f(f+1)/2 pairs by index is several times slower on CPU)
    coef = torch.full((f,), 1.0 / math.sqrt(f), dtype=x.dtype, device=x.device)
    coef[0] = 1.0 / math.sqrt(2.0 * f)
    rows = [x[..., i : i + 1] * (x[..., i:] * coef[: f - i]) for i in range(f)]
    return torch.cat([torch.ones_like(x[..., :1]), x / f**0.25, *rows], dim=-1)


# ---------------------------------------------------------------------------------------------
# cosFormer: cos re-weighting by position, decomposed into 2·D features


def cosformer_feature_map(x: torch.Tensor, positions: torch.Tensor, m: torch.Tensor | float) -> torch.Tensor:
    """[ReLU(x) cos θ, ReLU(x) sin θ] with θ_i = π·i/(2M): x (B, H, L, D) -> (B, H, L, 2D).

    positions: (L,) the position i of each row; m: M, a number or (B,) per example. Then
    φ(q_i)·φ(k_j) = ReLU(q_i)·ReLU(k_j)·cos(π(i-j)/2M) (cos a cos b + sin a sin b = cos(a - b)), which is
    >= 0 for |i - j| <= M. θ is computed in float64 and cast, so large positions keep their precision.
    """
    m = torch.as_tensor(m, dtype=torch.float64, device=x.device).reshape(-1)  # (B,) or (1,)
    theta = (math.pi / 2) * positions.to(torch.float64)[None, :] / m[:, None]  # (B|1, L)
    theta = theta[:, None, :, None].to(x.dtype)
    r = F.relu(x)
    return torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)


# ---------------------------------------------------------------------------------------------
# Performer (FAVOR+): positive orthogonal random features


def orthogonal_gaussian(rows: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows, dim) Gaussian orthogonal random matrix (Performer §4.2): blocks of dim orthonormal rows (QR of
    a Gaussian matrix), each row rescaled to the norm of an independent Gaussian vector, so every row is
    marginally N(0, I) while rows within a block are exactly orthogonal. float32 (default dtype), CPU."""
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        qmat, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        blocks.append(qmat.T)
    w = torch.cat(blocks, dim=0)[:rows]
    norms = torch.randn(rows, dim, generator=generator).norm(dim=1)
    return w * norms[:, None]


def favor_log_features(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """log φ(x) of FAVOR+'s positive features, unstabilised: ωx̂ - ‖x̂‖²/2 - ½·log m, x̂ = x·D^{-1/4}.

    x: (B, H, L, D); omega: (H, m, D) or (m, D) random rows -> (B, H, L, m). With these, E_ω[φ(q)·φ(k)] =
    exp(q·k/√D), the softmax kernel (φ = exp of this).
    """
    xs = x * x.shape[-1] ** -0.25
    proj = xs @ omega.to(x.dtype).transpose(-1, -2)  # (B, H, L, m)
    return proj - 0.5 * xs.square().sum(-1, keepdim=True) - 0.5 * math.log(omega.shape[-2])


def favor_query_features(log_q: torch.Tensor) -> torch.Tensor:
    """Query features exp(log φ(q_i) - max_f log φ(q_i)_f): each query's own constant, which cancels in the
    normalised attention (numerator and denominator share it). log_q: (B, H, L, m) -> (B, H, L, m), <= 1."""
    return torch.exp(log_q - log_q.amax(-1, keepdim=True).detach())


def favor_key_features(
    log_k: torch.Tensor, key_padding_mask: torch.Tensor | None = None, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stabilised key features and, causal, the log decay that undoes the stabiliser.

    log_k: (B, H, L, m); key_padding_mask: (B, L) True = padding (features zeroed there).
    Noncausal: φ_k = exp(log_k - c), c the max over all real keys and features of a (batch, head): one
    constant, which cancels in the normalised attention. -> (φ_k, None).
    Causal: a global max would look ahead, so c_j = max over real keys <= j (a running max, never
    ahead), φ_k_j = exp(log_k_j - c_j) <= 1, and out_i needs Σ_j exp(c_j - c_i) φ(q_i)·φ_k_j v_j: the
    recurrence's decay with cumulative a = -c, returned as per-step log decay g (B, H, L) <= 0 for
    `causal_recurrence` / `linear_attention(causal=True, log_decay=g)`. -> (φ_k, g).
    Every exponent is <= 0: no overflow however large the logits. The maxima are detached (constants).
    """
    pad = None if key_padding_mask is None else key_padding_mask[:, None, :, None]  # (B, 1, L, 1)
    low = torch.finfo(log_k.dtype).min / 4  # a finite "no key yet": differences of two stay finite
    if not causal:
        masked = log_k if pad is None else log_k.masked_fill(pad, low)
        c = masked.amax(dim=(-2, -1), keepdim=True).detach()  # one constant per (batch, head)
        phi = torch.exp(masked - c)
        return (phi if pad is None else phi.masked_fill(pad, 0.0)), None
    row_max = log_k.amax(-1, keepdim=True)  # (B, H, L, 1)
    if pad is not None:
        row_max = row_max.masked_fill(pad, low)
    c = torch.cummax(row_max.detach(), dim=2).values  # running max: never looks ahead
    phi = torch.exp((log_k - c).clamp(max=0.0))  # clamp: a padded key before any real one has c = low
    if pad is not None:
        phi = phi.masked_fill(pad, 0.0)
    return phi, log_decay_from_cumulative(-c.squeeze(-1))
