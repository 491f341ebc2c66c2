"""Every attention's analytic `flops(batch, len_q, len_k)` against two independent counters.

Parametrized over the registry (`list_attentions()` × each supported pattern), so an attention
registered later is checked without new code. The counters see matrix products (and
convolutions); they skip elementwise work (softmax, exp, cumsum, scans) by design, so:
  - a mechanism made of matrix products (the default) must agree with each counter within 5%;
  - a mechanism whose cost is dominated by other work declares `flops_matmul_only = False`
    (class attribute); then the counted matrix products must not exceed its stated FLOPs by
    more than 5% (its formula must at least cover them).
Counter 1: `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add), with SDPA forced
to the math backend (on CPU the fused kernel is not in its registry and counts 0).
Counter 2: fvcore's `FlopCountAnalysis` (jit trace; counts multiply-adds, so doubled here), with
handles added for SDPA and the matrix ops it skips, and an exact broadcasting-aware matmul (its own
under-counts when only the second operand has batch dims, fvcore PR #54).
Both count the torch forms (CAB_NATIVE_KERNELS=0): a compiled kernel computes some of the algorithm's products
out of their sight (mamba's rank-R W_Δ inside its scan), and is tested equal to the torch form elsewhere
(tests/test_ops.py).
Reference: /work/shared/reference/attentions.md §3.
"""

from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cab import Pattern, attention_spec, build_attention, list_attentions

BATCH, DIM, HEADS = 2, 64, 4
LEN_Q, LEN_K = 128, 96  # cross: Lq != Lk, so swapped lengths in a formula show up
FV_LEN_Q, FV_LEN_K = 64, 48  # fvcore traces Python loops step by step (scans): shorter
TOLERANCE = 0.05

CASES = [(name, p) for name in list_attentions() for p in sorted(attention_spec(name).patterns, key=list(Pattern).index)]
IDS = [f"{n}-{p.value}" for n, p in CASES]


@pytest.fixture(autouse=True)
def torch_forms(monkeypatch):
    monkeypatch.setenv("CAB_NATIVE_KERNELS", "0")


def make(name: str, pattern: Pattern, len_q: int = LEN_Q, len_k: int = LEN_K):
    torch.manual_seed(0)
    layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern=pattern).eval()
    len_k = len_k if pattern.is_cross else len_q
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, len_q, DIM, generator=g)
    context = torch.randn(BATCH, len_k, DIM, generator=g) if pattern.is_cross else None
    return layer, x, context, int(layer.flops(BATCH, len_q, len_k))


def check(layer, stated: int, counted: int, counter: str, len_q: int = LEN_Q, len_k: int = LEN_K) -> None:
    name = type(layer).attention_name
    assert stated > 0, f"{name}: stated FLOPs must be positive"
    # the counters run the dense math form: add back the masked blocks a fused kernel skips
    stated += layer.skipped_masked_flops(BATCH, len_q, len_k if layer.pattern.is_cross else len_q)
    if getattr(layer, "flops_matmul_only", True):
        rel = abs(stated - counted) / max(stated, counted)
        assert rel <= TOLERANCE, (
            f"{name} {layer.pattern.value}: stated {stated:,} FLOPs, {counter} counts {counted:,} "
            f"({counted / stated:.3f}×); a mechanism of matrix products must agree within {TOLERANCE:.0%}"
        )
    else:  # dominated by non-matmul work: the counted matmuls are a lower bound of the truth
        assert counted <= stated * (1 + TOLERANCE), (
            f"{name} {layer.pattern.value}: {counter} counts {counted:,} matmul FLOPs, more than the stated {stated:,}"
        )


# ---------------------------------------------------------------------------------------------
# torch FlopCounterMode


def torch_count(layer, x, context) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        layer(x, context=context)
    return int(counter.get_total_flops())


@pytest.mark.parametrize("name,pattern", CASES, ids=IDS)
def test_flops_match_torch_flop_counter(name, pattern):
    layer, x, context, stated = make(name, pattern)
    check(layer, stated, torch_count(layer, x, context), "FlopCounterMode")


# ---------------------------------------------------------------------------------------------
# fvcore FlopCountAnalysis (multiply-adds), with the handles it lacks


def _shape(value) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    return list(get_shape(value) or [])


def _prod(xs) -> int:
    return math.prod(int(v) for v in xs)


def _matmul_macs(inputs, outputs) -> int:
    """torch.matmul with any broadcasting: (elements of the output) × (the contracted size)."""
    a = _shape(inputs[0])
    return _prod(_shape(outputs[0])) * int(a[-1])


def _bmm_like_macs(inputs, outputs) -> int:
    """baddbmm(self, b1, b2, ...): output elements × contracted size (b1's last dim)."""
    return _prod(_shape(outputs[0])) * int(_shape(inputs[1])[-1])


def _addbmm_macs(inputs, outputs) -> int:
    """addbmm(self, b1 (b,n,k), b2 (b,k,m)): b·n·k·m."""
    return _prod(_shape(inputs[1])) * int(_shape(inputs[2])[-1])


def _mv_macs(inputs, outputs) -> int:
    """mv(mat, vec) / addmv(self, mat, vec): every element of the matrix once."""
    mats = [_shape(v) for v in inputs[:3] if len(_shape(v)) == 2]
    return _prod(mats[0]) if mats else 0


def _dot_macs(inputs, outputs) -> int:
    return int(_shape(inputs[0])[0])


def _sdpa_macs(inputs, outputs) -> int:
    """softmax(Q Kᵀ) V: Lq·Lk·E for the scores and Lq·Lk·Ev for the values, per batch×head."""
    q, k, v = (_shape(t) for t in inputs[:3])
    batch = _prod(_shape(outputs[0])[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _einsum_macs(inputs, outputs) -> int:
    """Two operands, no ellipsis: the product of every index's size (exact). Otherwise fvcore's."""
    from fvcore.nn.jit_handles import einsum_flop_jit

    equation = inputs[0].toIValue()
    operands = list(inputs[1].node().inputs())
    if len(operands) == 2 and "..." not in equation:
        lhs = equation.replace(" ", "").split("->")[0].split(",")
        sizes: dict[str, int] = {}
        for letters, op in zip(lhs, operands):
            sizes.update(zip(letters, _shape(op)))
        return _prod(sizes.values())
    return int(einsum_flop_jit(inputs, outputs))


FVCORE_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_macs,
    "aten::matmul": _matmul_macs,
    "aten::einsum": _einsum_macs,
    "aten::baddbmm": _bmm_like_macs,
    "aten::addbmm": _addbmm_macs,
    "aten::mv": _mv_macs,
    "aten::addmv": _mv_macs,
    "aten::dot": _dot_macs,
    "aten::vdot": _dot_macs,
}


def fvcore_count(layer, x, context) -> int:
    """fvcore's count of `layer(x, context)`, in FLOPs (its multiply-adds × 2)."""
    from fvcore.nn import FlopCountAnalysis

    class Wrapped(torch.nn.Module):  # trace one positional signature, context or not
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, *context):
            return self.inner(x, context=context[0] if context else None)

    inputs = (x,) if context is None else (x, context)
    analysis = FlopCountAnalysis(Wrapped(layer).eval(), inputs)
    analysis.set_op_handle(**FVCORE_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return 2 * int(analysis.total())


@pytest.mark.parametrize("name,pattern", CASES, ids=IDS)
def test_flops_match_fvcore(name, pattern):
    pytest.importorskip("fvcore")
    layer, x, context, stated = make(name, pattern, FV_LEN_Q, FV_LEN_K)
    try:
        counted = fvcore_count(layer, x, context)
    except Exception as exc:  # noqa: BLE001 - a mechanism jit.trace cannot follow: a counter limit
        pytest.skip(f"fvcore cannot trace {name} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    check(layer, stated, counted, "fvcore (×2)", FV_LEN_Q, FV_LEN_K)


# ---------------------------------------------------------------------------------------------
# the counters themselves, on shapes with known answers


def test_counters_agree_on_plain_attention_core():
    """4·B·H·Lq·Lk·D FLOPs for softmax(QKᵀ)V, from both counters, with SDPA and with matmul."""
    b, h, lq, lk, d = 2, 4, 128, 96, 32
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    expected = 4 * b * h * lq * lk * d

    class Sdpa(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    class Explicit(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.softmax(q @ k.transpose(-1, -2), -1) @ v

    from fvcore.nn import FlopCountAnalysis

    for module in (Sdpa(), Explicit()):
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(q, k, v)
        assert counter.get_total_flops() == expected
        analysis = FlopCountAnalysis(module, (q, k, v))
        analysis.set_op_handle(**FVCORE_HANDLES).unsupported_ops_warnings(False)
        assert 2 * analysis.total() == expected


def test_causal_exact_attention_counts_the_unmasked_pairs():
    """Causal softmax states the L(L+1)/2 unmasked pairs (FlashAttention's count), vanilla every pair."""
    length = 64
    pairs = length * (length + 1) // 2
    for name, expected_pairs in (("softmax", pairs), ("flash", pairs), ("vanilla", length * length)):
        layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern=Pattern.CAUSAL_SELF)
        assert layer.core_flops(1, length, length) == 4 * expected_pairs * DIM, name
        noncausal = build_attention(name, dim=DIM, num_heads=HEADS, pattern=Pattern.NONCAUSAL_SELF)
        assert noncausal.core_flops(1, length, length) == 4 * length * length * DIM, name


def test_matmul_handle_counts_broadcast_of_the_second_operand():
    """(L, D) @ (B, D, M): B·L·D·M multiply-adds (fvcore's own handle misses the batch)."""
    from fvcore.nn import FlopCountAnalysis

    class M(torch.nn.Module):
        def forward(self, a, b):
            return a @ b

    a, b = torch.randn(16, 8), torch.randn(3, 8, 4)
    analysis = FlopCountAnalysis(M(), (a, b)).set_op_handle(**FVCORE_HANDLES)
    assert analysis.total() == 3 * 16 * 8 * 4
