"""Zoo part 3 (vision/multimodal mechanisms ported to sequences): exact limits and dense references.

The pattern contract (prefix, perturbation, truncation, padding) is checked for every registered
attention in test_attention_contract.py; here each mechanism is checked against what it should
reduce to, or against a dense, mask-based reference written independently of its implementation.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cab import Pattern, attention_spec, build_attention

DIM, HEADS, B = 16, 2, 2
DH = DIM // HEADS
L, LK = 20, 27
NAMES = ["lookup", "perceiver", "halo", "channel", "lsda", "aggregated", "lka", "glca", "ccam"]


def layer(name, pattern, **hp):
    torch.manual_seed(0)
    return build_attention(name, dim=DIM, num_heads=HEADS, pattern=pattern, **hp).double().eval()


def softmax_twin(other, pattern):
    """A softmax layer with the same Q/K/V/output projections as `other`."""
    ref = layer("softmax", pattern)
    ref.load_state_dict({k: v for k, v in other.state_dict().items() if k.split(".")[0] in {"q_proj", "k_proj", "v_proj", "out_proj"}})
    return ref


def data(n=L, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, DIM, generator=g, dtype=torch.double)


def heads(t):  # (B, L, dim) -> (B, H, L, Dh)
    return t.view(t.shape[0], t.shape[1], HEADS, DH).transpose(1, 2)


def merge(t):
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], DIM)


def qkv(m, x, src=None):
    src = x if src is None else src
    return heads(m.q_proj(x)), heads(m.k_proj(src)), heads(m.v_proj(src))


def dense(q, k, v, allowed):
    """softmax(QKᵀ/√d) V restricted to allowed (broadcast to (B, H, Lq, Lk))."""
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1) @ v


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


# --------------------------------------------------------------------------------------------- halo
@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_halo_covering_window_is_softmax(pattern):
    m = layer("halo", pattern, block_size=L, halo_size=L)
    x = data()
    with torch.no_grad():
        close(m(x), softmax_twin(m, pattern)(x))


# --------------------------------------------------------------------------------------- aggregated
def _bare_aggregated(pattern, n):
    window = 2 * n + 1 if pattern == "noncausal_self" else n
    m = layer("aggregated", pattern, window_size=window, pool_size=0, qk_norm=False, chunk_size=7)
    with torch.no_grad():
        for p in (m.query_embedding, m.learnable_tokens, m.learnable_bias, m.rel_pos_bias):
            p.zero_()
    return m


@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_aggregated_covering_window_no_pool_is_softmax(pattern):
    m = _bare_aggregated(pattern, L)
    x = data()
    with torch.no_grad():
        close(m(x), softmax_twin(m, pattern)(x))


def _reference_check(m, x, ctx=None):
    """m equals its declared reference without padding and with padding in one batch row."""
    source = x if ctx is None else ctx
    mask = torch.zeros(B, source.shape[1], dtype=torch.bool)
    mask[1, -5:] = True
    real = ~mask if ctx is None else torch.ones(B, x.shape[1], dtype=torch.bool)  # padded queries mean nothing
    with torch.no_grad():
        close(m(x, context=ctx), m.reference_forward(x, context=ctx))
        got, want = m(x, context=ctx, key_padding_mask=mask), m.reference_forward(x, context=ctx, key_padding_mask=mask)
        close(got[real], want[real])


@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_aggregated_equals_its_reference_with_few_pooled_tokens(pattern):
    """Fewer pooled tokens than real ones, several chunks (the registry-wide reference test runs P = 49 on
    shorter inputs, where every pooled token is a single repeated token)."""
    _reference_check(layer("aggregated", pattern, window_size=5, pool_size=3, chunk_size=6), data())


# ----------------------------------------------------------------------------- perceiver / lookup
@pytest.mark.parametrize("pattern", ["noncausal_self", "noncausal_cross", "causal_cross"])
def test_perceiver_identity_latents_is_softmax(pattern):
    """With as many latents as keys and the latent read-in replaced by the identity (latent j = key j),
    the query read-out is softmax attention."""
    m = layer("perceiver", pattern, num_latents=LK)
    m.latent_kv = lambda k, v, mask: (k, v)
    x, ctx = data(), (data(LK, seed=2) if "cross" in pattern else None)
    with torch.no_grad():
        close(m(x, context=ctx), softmax_twin(m, pattern)(x, context=ctx))


@pytest.mark.parametrize("pattern", ["noncausal_self", "noncausal_cross", "causal_cross"])
def test_lookup_equals_its_reference_with_few_compressed_tokens(pattern):
    """M = 4 compressed tokens, fewer than the real ones (the registry-wide test runs M = 49 > its lengths)."""
    ctx = data(LK, seed=2) if "cross" in pattern else None
    _reference_check(layer("lookup", pattern, num_compressed=4), data(), ctx)


def test_lookup_pooling_is_segment_mean():
    m = layer("lookup", "noncausal_self", num_compressed=4)
    x = data(n=10)
    with torch.no_grad():
        z, _ = m.compress(x, torch.ones(B, 10, dtype=torch.bool))
    bounds = [0, 2, 5, 7, 10]  # floor(rank·4/10)
    close(z, torch.stack([x[:, a:c].mean(1) for a, c in zip(bounds, bounds[1:])], 1))


# -------------------------------------------------------------------------------------- channel
def test_channel_causal_chunks_equal_reference():
    """Several chunks (the contract test's short inputs fit in one): the carried prefix statistics."""
    m = layer("channel", "causal_self", chunk_size=6)
    x = data()
    with torch.no_grad():
        close(m(x), m.reference_forward(x))


# ----------------------------------------------------------------------------------------- lsda
@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_lsda_one_group_is_softmax(pattern):
    m = layer("lsda", pattern, group_size=L, interval=1)
    x = data()
    with torch.no_grad():
        close(m(x), softmax_twin(m, pattern)(x))


@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_lsda_equals_its_reference_with_small_groups(pattern):
    """The registry-wide reference test runs the default groups (49), one SDA group at its lengths."""
    m = layer("lsda", pattern, group_size=3, interval=2)
    x = data()
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[1, L - 5 :] = True
    with torch.no_grad():
        close(m(x), m.reference_forward(x))
        close(m(x, key_padding_mask=mask)[~mask], m.reference_forward(x, key_padding_mask=mask)[~mask])


# ------------------------------------------------------------------------------------------ lka
def test_lka_causal_does_not_look_ahead():
    m = layer("lka", "causal_self")
    x = data(n=40).requires_grad_(True)
    out = m(x)
    for i in (0, 7, 25):
        (grad,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)
        assert grad[:, i + 1 :].abs().max() == 0, f"output {i} depends on later inputs"
        reach = (m.kernel_size - 1) + (m.dilated_kernel_size - 1) * m.dilation
        assert grad[:, max(0, i - reach) : i + 1].abs().sum() > 0
        assert grad[:, : max(0, i - reach)].abs().max() == 0 if i > reach else True


def test_lka_noncausal_is_centred():
    m = layer("lka", "noncausal_self")
    x = data(n=60).requires_grad_(True)
    (grad,) = torch.autograd.grad(m(x)[:, 30].sum(), x)
    touched = (grad.abs().sum((0, 2)) > 0).nonzero().flatten()
    assert touched.min() == 30 - 11 and touched.max() == 30 + 11  # receptive field 23, centred


# ----------------------------------------------------------------------------------------- glca
def test_glca_all_selected_is_softmax():
    m = layer("glca", "noncausal_self", top_ratio=1.0, chunk_size=7)
    x = data()
    with torch.no_grad():
        close(m(x), softmax_twin(m, "noncausal_self")(x))


# ----------------------------------------------------------------------------------------- ccam
@pytest.mark.parametrize("pattern", ["noncausal_cross", "causal_cross"])
def test_ccam_without_mask_is_softmax_cross(pattern):
    m = layer("ccam", pattern, use_mask=False)
    x, ctx = data(), data(LK, seed=2)
    with torch.no_grad():
        close(m(x, context=ctx), softmax_twin(m, pattern)(x, context=ctx))


@pytest.mark.parametrize("pattern,slots", [("noncausal_cross", L), ("causal_cross", 1024), ("causal_cross", 8)])
def test_ccam_mask(pattern, slots):
    """Video-CCAM's timeline: query i sees the source up to its aligned time (j·N < (i+1)·n_k), so every
    query sees the first source token, visibility only grows with i, and the last query slot sees it all."""
    hp = {"num_queries": slots} if pattern == "causal_cross" and slots != 1024 else {}
    m = layer("ccam", pattern, **hp)
    allowed = m.ccam_mask(L, torch.ones(1, LK, dtype=torch.bool))[0, 0]  # (L, LK)
    i = torch.arange(L)[:, None]
    j = torch.arange(LK)[None, :]
    assert torch.equal(allowed, j * slots < (i + 1) * LK)
    assert allowed[:, 0].all() and (allowed[1:] >= allowed[:-1]).all()
    if slots <= L:
        assert allowed[slots - 1].all()


# ---------------------------------------------------------------------------------------- costs
CASES = [(n, p) for n in NAMES for p in sorted(attention_spec(n).patterns, key=list(Pattern).index)]


@pytest.mark.parametrize("name,pattern", CASES, ids=[f"{n}-{p.value}" for n, p in CASES])
def test_flops_match_flop_counter(name, pattern):
    n = 256
    torch.manual_seed(0)
    m = build_attention(name, dim=64, num_heads=4, pattern=pattern).eval()
    x = torch.randn(1, n, 64)
    ctx = torch.randn(1, n, 64) if pattern.is_cross else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        m(x, context=ctx)
    counted = counter.get_total_flops()
    assert abs(m.flops(1, n, n) - counted) <= 0.05 * counted
