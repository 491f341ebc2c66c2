"""Part 2 of the attention zoo: block/chunked forms against their quadratic or step-by-step
references, selection-based methods against their dense counterparts, state sizes against the
tensors their recurrences carry, and stated FLOPs against FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cab import Pattern, attention_spec, build_attention

DT = torch.float64
NAMES = ["lightning", "agent", "flowformer", "moh", "routing", "landmark", "gaussian", "based", "mamba", "sliding_window"]


def make(name, pattern, dim=32, heads=4, seed=0, **hp):
    torch.manual_seed(seed)
    return build_attention(name, dim=dim, num_heads=heads, pattern=pattern, **hp).to(DT).eval()


def rand(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def qkv(layer, x, context=None):
    src = x if context is None else context
    return (layer.split_heads(f(t)) for f, t in ((layer.q_proj, x), (layer.k_proj, src), (layer.v_proj, src)))


# -- lightning ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [32, 37, 83])
@pytest.mark.parametrize("decay", [True, False])
def test_lightning_block_form_equals_quadratic(length, decay):
    """Several blocks and segments (the contract test's short inputs fit in one block): the state carried
    across segments equals the layer's quadratic reference, with per-row padding."""
    layer = make("lightning", "causal_self", block_size=8, decay=decay, segment_blocks=3)
    q, k, v = qkv(layer, rand(2, length, 32))
    mask = torch.zeros(2, length, dtype=torch.bool)
    mask[1, length - 5 :] = True
    with torch.no_grad():
        for m in (None, mask):
            got, want = layer.attend(q, k, v, m), layer.reference_attend(q, k, v, m)
            keep = slice(None) if m is None else ~m
            torch.testing.assert_close(got.transpose(1, 2)[keep], want.transpose(1, 2)[keep], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("heads,slopes", [
    (1, [2**-8]),
    (4, [2**-2, 2**-4, 2**-6, 2**-8]),
    (8, [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8]),
    (6, [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]),  # ALiBi's rule: 4 heads' slopes, then 8 heads' at 0, 2
    (3, [2**-4, 2**-8, 2**-2]),  # 2 heads' slopes, then 4 heads' at index 0
])
def test_lightning_decay_is_exp_of_minus_the_alibi_slopes(heads, slopes):
    """λ_h = exp(-s_h), s_h the slopes of Lightning Attention's code (`_build_slope_tensor`): 2^(-8h/H)."""
    from cab.attentions.lightning import lightning_decay

    want = torch.exp(-torch.tensor(slopes, dtype=DT))
    torch.testing.assert_close(lightning_decay(heads), want, atol=0, rtol=1e-15)
    layer = make("lightning", "causal_self", dim=8 * heads, heads=heads)
    torch.testing.assert_close(layer.decay, want, atol=0, rtol=1e-15)


def test_lightning_noncausal_has_no_decay_and_rejects_it():
    assert not make("lightning", "noncausal_self").use_decay
    with pytest.raises(ValueError):
        make("lightning", "noncausal_self", decay=True)


# -- based --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["causal_self", "noncausal_self", "noncausal_cross"])
def test_based_chunked_equals_reference(pattern):
    """Several chunks and window blocks (the contract test's short inputs fit in one chunk), with padding."""
    layer = make("based", pattern, feature_dim=8, chunk_size=8, window=5)
    x, ctx = rand(2, 29, 32), (rand(2, 21, 32, seed=4) if "cross" in pattern else None)
    mask = torch.zeros(2, 21 if ctx is not None else 29, dtype=torch.bool)
    mask[1, -4:] = True
    with torch.no_grad():
        for m in (None, mask):
            got, want = layer(x, ctx, m), layer.reference_forward(x, ctx, m)
            keep = slice(None) if m is None or ctx is not None else ~m
            torch.testing.assert_close(got[keep], want[keep], atol=1e-10, rtol=1e-10)


# -- sliding window -----------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [1, 4, 7])
def test_sliding_window_equals_its_reference_at_small_windows(causal, window):
    """The registry-wide reference test runs the default window (64), longer than its sequences."""
    layer = make("sliding_window", "causal_self" if causal else "noncausal_self", window=window)
    x = rand(2, 23, 32)
    mask = torch.zeros(2, 23, dtype=torch.bool)
    mask[1, 19:] = True
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.reference_forward(x), atol=1e-10, rtol=1e-10)
        got, want = layer(x, key_padding_mask=mask), layer.reference_forward(x, key_padding_mask=mask)
        torch.testing.assert_close(got[~mask], want[~mask], atol=1e-10, rtol=1e-10)


# -- mamba --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [40, 37, 5, 1])
def test_mamba_scan_equals_recurrence(length):
    """The scan through cab.ops (its hand-written backward included) equals the step loop, values and gradients."""
    from cab.attentions.mamba import selective_scan, selective_scan_reference

    e, n = 6, 4
    u, bm, cm = rand(2, length, e, seed=5), rand(2, length, n, seed=6), rand(2, length, n, seed=7)
    delta = F.softplus(rand(2, length, e, seed=8))
    a = -torch.exp(rand(e, n, seed=9))
    d = rand(e, seed=10)
    leaves = [t.requires_grad_(True) for t in (u, delta, a, bm, cm, d)]
    weights = rand(2, length, e, seed=11)
    want = selective_scan_reference(u, delta, a, bm, cm, d)[0]
    got = selective_scan(u, delta, a, bm, cm, d)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    grads = [torch.autograd.grad((y * weights).sum(), leaves) for y in (got, want)]
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-10)


# -- selection with everything selected equals dense --------------------------------------------


@pytest.mark.parametrize("pattern", ["causal_self", "noncausal_self"])
def test_routing_all_regions_equals_dense(pattern):
    layer = make("routing", pattern, region_size=8, topk=100, lce_kernel=0)
    q, k, v = qkv(layer, rand(2, 37, 32))
    mask = torch.zeros(2, 37, dtype=torch.bool)
    mask[1, 30:] = True
    with torch.no_grad():
        got = layer.attend(q, k, v, mask)
        allowed = ~mask[:, None, None, :] & (torch.ones(37, 37, dtype=torch.bool).tril() if layer.causal else True)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(got[0], want[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(got[1, :, :30], want[1, :, :30], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("pattern", ["causal_self", "noncausal_self"])
def test_routing_equals_its_reference_with_several_regions(pattern):
    """The registry-wide reference test runs the default region (64), one region at its lengths; here
    top-2 routing among 5 regions, with padding (row 1's last region is all padding)."""
    layer = make("routing", pattern, region_size=8, topk=2)
    x = rand(2, 37, 32)
    mask = torch.zeros(2, 37, dtype=torch.bool)
    mask[1, 30:] = True
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.reference_forward(x), atol=1e-10, rtol=1e-10)
        got, want = layer(x, key_padding_mask=mask), layer.reference_forward(x, key_padding_mask=mask)
        torch.testing.assert_close(got[~mask], want[~mask], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("pattern", ["causal_self", "noncausal_self"])
@pytest.mark.parametrize("top_k", [None, 2, 50])
@pytest.mark.parametrize("dense_max_keys", [0, 10_000])
def test_landmark_equals_its_reference_with_several_blocks(monkeypatch, pattern, top_k, dense_max_keys):
    """The registry-wide reference test runs the default block (50), one block at its lengths; here
    several blocks, retrieval of all or of the top k, padding, the gathered and the dense read."""
    import cab.attentions.landmark as landmark_module

    monkeypatch.setattr(landmark_module, "DENSE_MAX_KEYS", dense_max_keys)
    layer = make("landmark", pattern, block_size=6, top_k=top_k, query_chunk=12)
    x = rand(2, 33, 32)
    mask = torch.zeros(2, 33, dtype=torch.bool)
    mask[1, 20:] = True  # the last two blocks of row 1 are all padding
    with torch.no_grad():
        layer.landmark.normal_()
        torch.testing.assert_close(layer(x), layer.reference_forward(x), atol=1e-10, rtol=1e-10)
        got, want = layer(x, key_padding_mask=mask), layer.reference_forward(x, key_padding_mask=mask)
        torch.testing.assert_close(got[~mask], want[~mask], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("pattern", ["causal_self", "noncausal_self"])
def test_landmark_dense_read_equals_gathered_read(monkeypatch, pattern):
    """Short sequences read the retrieved blocks densely; the result and its gradients must be the
    gather path's, with top-k retrieval and padding."""
    import cab.attentions.landmark as landmark_module

    layer = make("landmark", pattern, block_size=5, top_k=2, query_chunk=10)
    with torch.no_grad():
        layer.landmark.normal_()
    x = rand(2, 37, 32)
    mask = torch.zeros(2, 37, dtype=torch.bool)
    mask[1, 29:] = True
    results = []
    for dense_max_keys in (0, 10_000):  # gather everywhere, then dense everywhere
        monkeypatch.setattr(landmark_module, "DENSE_MAX_KEYS", dense_max_keys)
        layer.zero_grad()
        out = layer(x, key_padding_mask=mask)
        out[0].sum().backward()
        results.append((out.detach(), layer.q_proj.weight.grad.clone()))
    (gathered, g_grad), (dense, d_grad) = results
    torch.testing.assert_close(dense[0], gathered[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dense[1, :29], gathered[1, :29], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(d_grad, g_grad, atol=1e-9, rtol=1e-9)


def test_landmark_top_k_retrieves_fewer_blocks():
    full = make("landmark", "causal_self", block_size=4, top_k=None)
    part = make("landmark", "causal_self", block_size=4, top_k=1)
    x = rand(1, 40, 32)
    with torch.no_grad():
        a, b = full(x), part(x)
    torch.testing.assert_close(a[:, :8], b[:, :8])  # blocks 0-1 have at most one earlier block
    assert not torch.allclose(a[:, 12:], b[:, 12:])
    assert part.flops(1, 4000, 4000) < full.flops(1, 4000, 4000)  # past DENSE_MAX_KEYS: only k blocks are read


@pytest.mark.parametrize("pattern", list(Pattern))
def test_moh_all_heads_with_unit_gates_equals_multihead_softmax(pattern):
    layer = make("moh", pattern, shared_heads=1, top_k=3)
    layer.head_gates = lambda x: torch.ones(*x.shape[:2], layer.num_heads, dtype=x.dtype)
    x, ctx = rand(2, 19, 32), (rand(2, 23, 32, seed=4) if Pattern.parse(pattern).is_cross else None)
    with torch.no_grad():
        q, k, v = qkv(layer, x, ctx)
        dense = F.scaled_dot_product_attention(q, k, v, is_causal=layer.causal)
        torch.testing.assert_close(layer(x, ctx), layer.out_proj(layer.merge_heads(dense)))


def test_moh_gates_select_top_k_routed_heads():
    layer = make("moh", "causal_self", dim=32, heads=8)
    assert (layer.shared_heads, layer.top_k) == (2, 4)  # 6 of 8 heads active
    gates = layer.head_gates(rand(2, 5, 32))
    assert ((gates[..., 2:] > 0).sum(-1) == 4).all() and (gates[..., :2] > 0).all()


# -- state sizes: run the recurrence step by step, compare, count what it carries --------------


def test_lightning_state_is_what_its_recurrence_carries():
    layer = make("lightning", "causal_self", block_size=4, segment_blocks=2)
    q, k, v = qkv(layer, rand(2, 19, 32))
    q, k = F.silu(q), F.silu(k)
    lam = layer.decay.view(1, -1, 1, 1)
    state = torch.zeros(2, 4, 8, 8, dtype=DT)  # KV per head
    outs = []
    for t in range(19):
        state = lam * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ state).squeeze(-2))
    with torch.no_grad():
        torch.testing.assert_close(torch.stack(outs, 2), layer.linear_core(*qkv(layer, rand(2, 19, 32)), None))
    assert layer.state_size(19) == state[0].numel()


def test_based_and_sliding_window_state_is_what_decoding_carries():
    from cab.ops import taylor_feature_map

    window = 5
    layer = make("based", "causal_self", feature_dim=4, window=window)
    x = rand(2, 17, 32)
    fq, fk = (taylor_feature_map(layer.features(p(x))) for p in (layer.fq_proj, layer.fk_proj))
    q, k, v = qkv(layer, x)
    s = torch.zeros(2, 4, fq.shape[-1], 8, dtype=DT)  # Σ φ(k) vᵀ
    z = torch.zeros(2, 4, fq.shape[-1], dtype=DT)  # Σ φ(k)
    cache_k, cache_v = [], []  # the window's last `window` keys and values
    outs = []
    for t in range(17):
        s = s + fk[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + fk[:, :, t]
        lin = (fq[:, :, t, None, :] @ s).squeeze(-2) / ((fq[:, :, t] * z).sum(-1, keepdim=True) + layer.eps)
        keys = torch.stack(cache_k + [k[:, :, t]], 2)
        vals = torch.stack(cache_v + [v[:, :, t]], 2)
        win = F.scaled_dot_product_attention(q[:, :, t, None], keys, vals).squeeze(-2)
        outs.append(lin + win)
        cache_k, cache_v = (cache_k + [k[:, :, t]])[-window:], (cache_v + [v[:, :, t]])[-window:]
    with torch.no_grad():
        torch.testing.assert_close(layer.out_proj(layer.merge_heads(torch.stack(outs, 2))), layer(x))
    carried = s[0].numel() + z[0].numel() + sum(t[0].numel() for t in cache_k + cache_v)
    assert layer.state_size(17) == carried
    sw = make("sliding_window", "causal_self", window=window)
    assert sw.state_size(17) == sum(t[0].numel() for t in cache_k + cache_v) == 2 * 32 * window


def test_mamba_state_is_what_its_recurrence_carries():
    layer = make("mamba", "causal_self", dim=16, d_state=4)
    x = rand(2, 11, 16)
    br = layer.forward_branch
    xs, z = layer.in_proj(x).chunk(2, dim=-1)
    h = torch.zeros(2, layer.inner, 4, dtype=DT)  # SSM state
    conv = torch.zeros(2, layer.inner, layer.d_conv - 1, dtype=DT)  # last d_conv - 1 inputs
    a = -torch.exp(br.A_log)
    ys = []
    for t in range(11):
        window = torch.cat([conv, xs[:, t, :, None]], -1)  # (B, E, d_conv)
        u = F.silu((window * br.conv_weight[:, 0]).sum(-1) + br.conv_bias)
        dt_r, bm, cm = torch.split(br.x_proj(u), [br.dt_rank, 4, 4], dim=-1)
        delta = F.softplus(br.dt_proj(dt_r))
        h = torch.exp(delta[..., None] * a) * h + (delta * u)[..., None] * bm[:, None, :]
        ys.append((h * cm[:, None, :]).sum(-1) + br.D * u)
        conv = window[..., 1:]
    with torch.no_grad():
        torch.testing.assert_close(layer.out_proj(torch.stack(ys, 1) * F.silu(z)), layer(x))
    assert layer.state_size(11) == h[0].numel() + conv[0].numel()


def test_flowformer_state_is_what_its_recurrence_carries():
    layer = make("flowformer", "causal_self")
    q, k, v = qkv(layer, rand(2, 13, 32))
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    eps, d = layer.eps, 8
    carried = dict(sk=torch.zeros(2, 4, d, dtype=DT), sq=torch.zeros(2, 4, d, dtype=DT),
                   sko=torch.zeros(2, 4, d, dtype=DT), sqi=torch.zeros(2, 4, d, dtype=DT),
                   zexp=torch.zeros(2, 4, dtype=DT), s=torch.zeros(2, 4, d, d, dtype=DT), count=torch.zeros(2, 1, dtype=DT))
    c = carried
    outs = []
    for t in range(13):
        qt, kt, vt = q[:, :, t], k[:, :, t], v[:, :, t]
        c["count"] = c["count"] + 1
        n = c["count"]
        c["sk"], c["sq"] = c["sk"] + kt, c["sq"] + qt
        si = n / ((qt + eps) * (c["sk"] + eps)).sum(-1)
        so = n / ((kt + eps) * (c["sq"] + eps)).sum(-1)
        c["sko"], c["sqi"] = c["sko"] + kt * so[..., None], c["sqi"] + qt * si[..., None]
        sink = ((qt + eps) * (c["sko"] + eps)).sum(-1) / n
        source = (((kt + eps) * (c["sqi"] + eps)).sum(-1) / n).clamp(-1, 1)
        c["zexp"] = c["zexp"] + torch.exp(source)
        comp = torch.exp(source) / c["zexp"] * n
        c["s"] = c["s"] + kt[..., None] * (vt * comp[..., None])[..., None, :]
        outs.append(((qt * (si / n)[..., None])[..., None, :] @ c["s"]).squeeze(-2) * torch.sigmoid(sink)[..., None])
    with torch.no_grad():
        torch.testing.assert_close(torch.stack(outs, 2), layer.attend(*qkv(layer, rand(2, 13, 32)), None))
    assert layer.state_size(13) == sum(t[0].numel() for t in carried.values())


def test_gaussian_state_is_what_its_recurrence_carries():
    layer = make("gaussian", "causal_self")
    x = rand(2, 9, 32)
    with torch.no_grad():
        layer.mean_offsets.normal_()
        v = layer.v_proj(x).view(2, 9, 4, 8)
        c = dict(s1=torch.zeros(2, 4, 8, dtype=DT), s2=torch.zeros(2, 4, 8, dtype=DT),
                 logz=torch.full((2, 4, 8), -torch.inf, dtype=DT), count=torch.zeros(2, 1, 1, dtype=DT))
        outs = []
        for t in range(9):
            vt = v[:, t]
            c["count"], c["s1"], c["s2"] = c["count"] + 1, c["s1"] + vt, c["s2"] + vt**2
            mean = c["s1"] / c["count"]
            var = ((c["s2"] - c["count"] * mean**2) / (c["count"] - 1).clamp(min=1)).clamp(min=0)
            logm = layer.log_density(vt[:, None], mean[:, None], var[:, None])[:, 0]
            c["logz"] = torch.logaddexp(c["logz"], logm)
            outs.append(vt * torch.exp(logm - c["logz"]))
        torch.testing.assert_close(layer.out_proj(torch.stack(outs, 1).reshape(2, 9, 32)), layer(x))
    assert layer.state_size(9) == sum(t[0].numel() for t in c.values())


# -- agent ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_agents", [4, 7])
def test_agent_equals_its_reference_with_few_agents(num_agents):
    """Fewer agents than real tokens, bins of unequal size (the registry-wide reference test runs 49 agents on
    shorter inputs, where every agent is a single repeated query)."""
    layer = make("agent", "noncausal_self", num_agents=num_agents)
    x = rand(2, 23, 32)
    mask = torch.zeros(2, 23, dtype=torch.bool)
    mask[1, 17:] = True
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.reference_forward(x), atol=1e-10, rtol=1e-10)
        got, want = layer(x, key_padding_mask=mask), layer.reference_forward(x, key_padding_mask=mask)
        torch.testing.assert_close(got[~mask], want[~mask], atol=1e-10, rtol=1e-10)


# -- FLOPs ----------------------------------------------------------------------------------------

FLOP_CASES = [(n, p) for n in NAMES for p in sorted(attention_spec(n).patterns, key=list(Pattern).index)]


@pytest.mark.parametrize("name,pattern", FLOP_CASES, ids=[f"{n}-{p.value}" for n, p in FLOP_CASES])
def test_flops_agree_with_flop_counter(monkeypatch, name, pattern):
    monkeypatch.setenv("CAB_NATIVE_KERNELS", "0")  # the torch forms: mamba's compiled scan does W_Δ out of sight
    length, dim = 256, 64
    torch.manual_seed(0)
    layer = build_attention(name, dim=dim, num_heads=4, pattern=pattern).eval()
    x = torch.randn(1, length, dim)
    ctx = torch.randn(1, length, dim) if pattern.is_cross else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        layer(x, context=ctx)
    counted, stated = counter.get_total_flops(), layer.flops(1, length, length)
    assert abs(stated - counted) <= 0.05 * counted, f"stated {stated} vs counted {counted}"
