"""The pattern contract, checked for every registered attention on every pattern it claims.

Parametrized over the registry: an attention registered later is tested here without new code.
Layers run in float64, so every identity is held to a tolerance scaled to that dtype (about 1e-10),
not to float32's: a mechanism that leaks a little across the causal boundary or the padding fails.
"""

from __future__ import annotations

import pytest
import torch

from cab import Pattern, attention_spec, build_attention, list_attentions
from cab.registry import UnsupportedPatternError

DIM, HEADS, BATCH = 32, 4, 3
LEN_Q, LEN_K = 24, 40  # cross: Lq != Lk
PADDING_PER_ROW = (0, 3, 11)  # appended padded positions per batch row: a mask read on the wrong axis fails
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}
ATOL = TOLERANCE[torch.float64]

CASES = [(name, p) for name in list_attentions() for p in sorted(attention_spec(name).patterns, key=list(Pattern).index)]
UNSUPPORTED = [(name, p) for name in list_attentions() for p in attention_spec(name).unsupported]


def make(name: str, pattern: Pattern, seed: int = 0):
    torch.manual_seed(seed)
    layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern=pattern).double()
    return layer.eval()


def inputs(pattern: Pattern, seed: int = 1, len_q: int = LEN_Q, len_k: int = LEN_K):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, len_q, DIM, generator=g, dtype=torch.double)
    context = torch.randn(BATCH, len_k, DIM, generator=g, dtype=torch.double) if pattern.is_cross else None
    return x, context


def run(layer, x, context=None, mask=None):
    with torch.no_grad():
        return layer(x, context=context, key_padding_mask=mask)


@pytest.mark.parametrize("name,pattern", CASES, ids=[f"{n}-{p.value}" for n, p in CASES])
def test_shape_and_finite(name, pattern):
    layer = make(name, pattern)
    x, context = inputs(pattern)
    out = run(layer, x, context)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,pattern", CASES, ids=[f"{n}-{p.value}" for n, p in CASES])
def test_gradients_finite(name, pattern):
    layer = make(name, pattern).train()
    x, context = inputs(pattern)
    x.requires_grad_(True)
    out = layer(x, context=context)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in layer.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no parameter received a gradient"


CAUSAL_SELF = [(n, p) for n, p in CASES if p is Pattern.CAUSAL_SELF]
CAUSAL_CROSS = [(n, p) for n, p in CASES if p is Pattern.CAUSAL_CROSS]


@pytest.mark.parametrize("name,pattern", CAUSAL_SELF, ids=[n for n, _ in CAUSAL_SELF])
def test_causal_self_prefix(name, pattern):
    """CAB's test: output i on the full input equals output i computed on the prefix x[:, :i+1]."""
    layer = make(name, pattern)
    x, _ = inputs(pattern, len_q=LEN_K)
    full = run(layer, x)
    for i in sorted({1, LEN_K // 2 - 1, LEN_K // 2, LEN_K - 2}):
        prefix = run(layer, x[:, : i + 1])
        torch.testing.assert_close(prefix[:, i], full[:, i], atol=ATOL, rtol=ATOL, msg=f"position {i}")


@pytest.mark.parametrize("name,pattern", CAUSAL_SELF, ids=[n for n, _ in CAUSAL_SELF])
def test_causal_self_perturbation(name, pattern):
    """Changing the inputs after position i leaves outputs <= i unchanged."""
    layer = make(name, pattern)
    x, _ = inputs(pattern, len_q=LEN_K)
    full = run(layer, x)
    cut = LEN_K // 3
    y = x.clone()
    y[:, cut + 1 :] = torch.randn_like(y[:, cut + 1 :]) * 3
    changed = run(layer, y)
    torch.testing.assert_close(changed[:, : cut + 1], full[:, : cut + 1], atol=ATOL, rtol=ATOL)
    assert not torch.allclose(changed[:, cut + 1 :], full[:, cut + 1 :]), "later outputs ignore later inputs"


@pytest.mark.parametrize("name,pattern", CAUSAL_CROSS, ids=[n for n, _ in CAUSAL_CROSS])
def test_causal_cross_query_truncation(name, pattern):
    """Output i must not depend on queries after i: truncating the queries keeps the kept outputs."""
    layer = make(name, pattern)
    x, context = inputs(pattern)
    full = run(layer, x, context)
    for keep in sorted({1, LEN_Q // 2, LEN_Q - 1}):
        part = run(layer, x[:, :keep], context)
        torch.testing.assert_close(part, full[:, :keep], atol=ATOL, rtol=ATOL, msg=f"keep {keep}")


@pytest.mark.parametrize("name,pattern", CASES, ids=[f"{n}-{p.value}" for n, p in CASES])
def test_padding_per_row_equals_each_row_alone(name, pattern):
    """Padding that differs per batch row: each row's real outputs equal that row run alone, unpadded.

    Row b has `PADDING_PER_ROW[b]` padded key positions (loud noise, marked True in key_padding_mask)
    after its real ones; a mask broadcast over the wrong axis, or padding that leaks into the real
    positions (a denominator, a pooled segment, a normaliser), changes the outputs and fails."""
    layer = make(name, pattern)
    x, context = inputs(pattern)
    source = context if pattern.is_cross else x
    length = source.shape[1]
    g = torch.Generator().manual_seed(7)
    noisy = source.clone()
    mask = torch.zeros(BATCH, length, dtype=torch.bool)
    for row, pad in enumerate(PADDING_PER_ROW):
        if pad:
            noisy[row, length - pad :] = torch.randn(pad, DIM, generator=g, dtype=torch.double) * 5
            mask[row, length - pad :] = True
    if pattern.is_cross:
        batched = run(layer, x, noisy, mask)
    else:
        batched = run(layer, noisy, None, mask)
    for row, pad in enumerate(PADDING_PER_ROW):
        real = length - pad
        if pattern.is_cross:
            alone = run(layer, x[row : row + 1], context[row : row + 1, :real])
            got = batched[row : row + 1]
        else:
            alone = run(layer, x[row : row + 1, :real])
            got = batched[row : row + 1, :real]
        torch.testing.assert_close(got, alone, atol=ATOL, rtol=ATOL, msg=f"row {row} with {pad} padded keys")


REFERENCED = [(n, p) for n, p in CASES if attention_spec(n).cls.declares_reference()]


@pytest.mark.parametrize("name,pattern", REFERENCED, ids=[f"{n}-{p.value}" for n, p in REFERENCED])
def test_equals_its_reference(name, pattern):
    """A mechanism that declares a reference form (quadratic or step by step) equals it, with padding
    that differs per row; padded query positions of self patterns carry no meaning and are skipped."""
    layer = make(name, pattern)
    x, context = inputs(pattern)
    keys = LEN_K if pattern.is_cross else LEN_Q
    mask = torch.zeros(BATCH, keys, dtype=torch.bool)
    for row, pad in enumerate(PADDING_PER_ROW):
        if pad:
            mask[row, keys - pad :] = True
    with torch.no_grad():
        for m in (None, mask):
            got = layer(x, context=context, key_padding_mask=m)
            want = layer.reference_forward(x, context=context, key_padding_mask=m)
            if m is not None and not pattern.is_cross:
                got, want = got[~m], want[~m]
            torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL, msg=f"padding {m is not None}")


def test_the_exact_attentions_declare_references():
    """The reference test above is not vacuous: at least the exact attentions are in it."""
    names = {n for n, _ in REFERENCED}
    assert {"softmax", "vanilla", "flash"} <= names, sorted(names)


@pytest.mark.parametrize("name,pattern", UNSUPPORTED, ids=[f"{n}-{p.value}" for n, p in UNSUPPORTED])
def test_unsupported_pattern_fails_at_build(name, pattern):
    with pytest.raises(UnsupportedPatternError, match="supports"):
        build_attention(name, dim=DIM, num_heads=HEADS, pattern=pattern)
    assert attention_spec(name).unsupported[pattern].strip(), "each unsupported pattern needs a reason"


@pytest.mark.parametrize("name", list_attentions())
def test_declares_costs(name):
    spec = attention_spec(name)
    pattern = sorted(spec.patterns, key=list(Pattern).index)[0]
    layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern=pattern)
    small, large = layer.flops(1, 64, 64), layer.flops(2, 64, 64)
    assert isinstance(small, int) and small > 0
    assert large == 2 * small, "FLOPs must be per example times batch"
    state = layer.state_size(64)
    assert state is None or (isinstance(state, int) and state > 0)
    import sys

    doc = (spec.cls.__doc__ or "") + (sys.modules[spec.cls.__module__].__doc__ or "")
    assert doc.strip(), "the module or class docstring names the paper"
