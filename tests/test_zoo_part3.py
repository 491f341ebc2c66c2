"""Zoo part 3 (vision/multimodal mechanisms ported to sequences): exact limits and dense references.

The pattern contract (prefix, perturbation, truncation, padding) is checked for every registered
attention in test_attention_contract.py; here each mechanism is checked against what it should
reduce to, or against a dense, mask-based reference written independently of its implementation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
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


@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_halo_matches_dense_block_mask(pattern):
    blk, halo = 4, 3
    m = layer("halo", pattern, block_size=blk, halo_size=halo)
    x = data()
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    start = (i // blk) * blk
    allowed = (j >= start - halo) & (j < start + blk + (0 if pattern == "causal_self" else halo))
    if pattern == "causal_self":
        allowed &= j <= i
    with torch.no_grad():
        q, k, v = qkv(m, x)
        close(m(x), m.out_proj(merge(dense(q, k, v, allowed))))


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


@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_aggregated_matches_naive_reference(pattern):
    """Window + pooled tokens under one softmax, written per query with explicit loops."""
    w, p = 5, 3
    m = layer("aggregated", pattern, window_size=w, pool_size=p, chunk_size=6)
    x = data(n=11)
    n = x.shape[1]
    causal = pattern == "causal_self"
    left = w - 1 if causal else (w - 1) // 2
    with torch.no_grad():
        q, k, v = qkv(m, x)
        qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        qs = (qn + m.query_embedding) * F.softplus(m.temperature) * math.log(w + p)
        out = torch.zeros_like(q)
        for i in range(n):
            vis = i + 1 if causal else n  # pooled tokens summarise x[:vis]
            bounds = [math.floor(s * vis / p) for s in range(p + 1)]
            segs = [(a, c) for a, c in zip(bounds, bounds[1:])]
            slots = [(s, i - left + s) for s in range(w) if 0 <= i - left + s < n]
            s_loc = torch.stack([(qs[:, :, i] * kn[:, :, j]).sum(-1) + m.rel_pos_bias[:, 0, s] for s, j in slots], -1)
            kp = [F.normalize(k[:, :, a:c].mean(2), dim=-1) for a, c in segs if c > a]
            vp = [v[:, :, a:c].mean(2) for a, c in segs if c > a]
            s_pool = torch.stack([(qs[:, :, i] * kk).sum(-1) for kk in kp], -1)
            attn = torch.softmax(torch.cat([s_loc, s_pool], -1), -1)
            a_loc, a_pool = attn[..., : len(slots)], attn[..., len(slots) :]
            extra = (qn[:, :, i, None, :] @ m.learnable_tokens).squeeze(-2) + m.learnable_bias[:, 0]  # (B, H, W)
            for t, (s, j) in enumerate(slots):
                out[:, :, i] += (a_loc[..., t] + extra[..., s])[..., None] * v[:, :, j]
            for t, vv in enumerate(vp):
                out[:, :, i] += a_pool[..., t, None] * vv
        close(m(x), m.out_proj(merge(out)))


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


def test_perceiver_matches_dense_two_hop():
    m = layer("perceiver", "noncausal_cross", num_latents=5)
    x, ctx = data(), data(LK, seed=2)
    mask = torch.zeros(B, LK, dtype=torch.bool)
    mask[0, -4:] = True
    with torch.no_grad():
        q, k, v = qkv(m, x, ctx)
        lat = m.latents.expand(B, -1, -1, -1)
        z = merge(dense(lat, k, v, ~mask[:, None, None, :]))
        lk, lv = heads(m.latent_k(z)), heads(m.latent_v(z))
        close(m(x, context=ctx, key_padding_mask=mask), m.out_proj(merge(dense(q, lk, lv, torch.ones(1, dtype=torch.bool)))))


def _lookup_reference(m, x, src, cross):
    """LookupViT's three steps, dense, with the compressed tokens given (pooling tested separately)."""
    z = m.compress(src, torch.ones(src.shape[:2], dtype=torch.bool))[0]
    qc, k, v = heads(m.q_proj(z)), heads(m.k_proj(src)), heads(m.v_proj(src))
    yes = torch.ones(1, dtype=torch.bool)
    zc = merge(dense(qc, k, v, yes))
    q2, k2, v2 = (heads(t) for t in m.c_qkv(zc).chunk(3, -1))
    zc = zc + m.c_out(merge(dense(q2, k2, v2, yes)))
    kx = heads(m.k_proj(x))
    s = kx @ qc.transpose(-1, -2) / math.sqrt(DH)  # (B, H, Lq, M); for self, the gather scores transposed
    return m.out_proj(merge(torch.softmax(s, -1) @ heads(m.c_v(zc))))


@pytest.mark.parametrize("pattern", ["noncausal_self", "noncausal_cross"])
def test_lookup_as_many_compressed_as_tokens(pattern):
    """M = L: pooling is the identity (each compressed token is one token), and the layer equals the
    dense three-step reference. (No softmax limit: the paper's form always has two hops.)"""
    cross = "cross" in pattern
    x, src = data(), (data(LK, seed=2) if cross else None)
    source = src if cross else x
    m = layer("lookup", pattern, num_compressed=source.shape[1])
    with torch.no_grad():
        z, valid = m.compress(source, torch.ones(source.shape[:2], dtype=torch.bool))
        close(z, source)
        assert valid.all()
        close(m(x, context=src), _lookup_reference(m, x, source, cross))


def test_lookup_pooling_is_segment_mean():
    m = layer("lookup", "noncausal_self", num_compressed=4)
    x = data(n=10)
    with torch.no_grad():
        z, _ = m.compress(x, torch.ones(B, 10, dtype=torch.bool))
    bounds = [0, 2, 5, 7, 10]  # floor(rank·4/10)
    close(z, torch.stack([x[:, a:c].mean(1) for a, c in zip(bounds, bounds[1:])], 1))


# -------------------------------------------------------------------------------------- channel
@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self", "noncausal_cross"])
def test_channel_matches_dense_reference(pattern):
    m = layer("channel", pattern, chunk_size=6)
    cross = "cross" in pattern
    x, ctx = data(), (data(LK, seed=2) if cross else None)
    with torch.no_grad():
        q, k, v = qkv(m, x, ctx)
        if pattern == "causal_self":
            out = torch.stack(
                [q[:, :, i : i + 1] @ torch.softmax(k[:, :, : i + 1].transpose(-1, -2) @ v[:, :, : i + 1] / math.sqrt(DH), -1).transpose(-1, -2)
                 for i in range(L)], 2).squeeze(3)
        else:
            out = q @ torch.softmax(k.transpose(-1, -2) @ v / math.sqrt(DH), -1).transpose(-1, -2)
        close(m(x, context=ctx), m.out_proj(merge(out)))


# ----------------------------------------------------------------------------------------- lsda
@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_lsda_one_group_is_softmax(pattern):
    m = layer("lsda", pattern, group_size=L, interval=1)
    x = data()
    with torch.no_grad():
        close(m(x), softmax_twin(m, pattern)(x))


@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self"])
def test_lsda_matches_dense_group_masks(pattern):
    g, iv = 3, 2
    m = layer("lsda", pattern, group_size=g, interval=iv)
    x = data()
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    short = (i // g) == (j // g)
    long = ((i // (g * iv)) == (j // (g * iv))) & ((i % iv) == (j % iv))
    allowed = torch.stack([short, long])[None]  # head 0 SDA, head 1 LDA
    if pattern == "causal_self":
        allowed = allowed & (j <= i)
    with torch.no_grad():
        q, k, v = qkv(m, x)
        close(m(x), m.out_proj(merge(dense(q, k, v, allowed))))


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


def test_glca_selects_top_rollout_and_passes_the_rest():
    m = layer("glca", "noncausal_self", top_ratio=0.25, chunk_size=7)
    x = data()
    with torch.no_grad():
        q, k, v = qkv(m, x)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(DH), -1)  # (B, H, L, L)
        rollout = 0.5 * a + 0.5 * torch.eye(L)
        score = rollout.mean(1).mean(1)  # mean over heads, then over query rows -> (B, L)
        top = score.topk(math.ceil(0.25 * L), dim=1).indices
        ref = v.clone()
        full = a @ v
        for b in range(B):
            ref[b, :, top[b]] = full[b, :, top[b]]
        close(m(x), m.out_proj(merge(ref)))


# ----------------------------------------------------------------------------------------- ccam
@pytest.mark.parametrize("pattern", ["noncausal_cross", "causal_cross"])
def test_ccam_without_mask_is_softmax_cross(pattern):
    m = layer("ccam", pattern, use_mask=False)
    x, ctx = data(), data(LK, seed=2)
    with torch.no_grad():
        close(m(x, context=ctx), softmax_twin(m, pattern)(x, context=ctx))


@pytest.mark.parametrize("pattern,slots", [("noncausal_cross", L), ("causal_cross", 1024), ("causal_cross", 8)])
def test_ccam_mask(pattern, slots):
    hp = {"num_queries": slots} if pattern == "causal_cross" and slots != 1024 else {}
    m = layer("ccam", pattern, **hp)
    x, ctx = data(), data(LK, seed=2)
    i = torch.arange(L)[:, None]
    j = torch.arange(LK)[None, :]
    allowed = j * slots < (i + 1) * LK  # query i sees the source up to its aligned time
    assert allowed[:, 0].all()  # every query sees the first source token
    if slots <= L:
        assert allowed[slots - 1].all()  # the last query slot sees the whole source
    with torch.no_grad():
        q, k, v = qkv(m, x, ctx)
        close(m(x, context=ctx), m.out_proj(merge(dense(q, k, v, allowed))))


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
