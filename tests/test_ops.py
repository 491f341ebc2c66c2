"""cab.ops: every fast form against its reference form, in float64 with tight tolerances.

The core is one table, CASES: (name, fast, reference, make) where make(generator) returns the inputs and
fast(**inputs) must equal reference(**inputs). Inputs use lengths that are not multiples of the chunk or
block, batch rows with different padding (one all padding, so a mask broadcast over the wrong dimension,
or an empty row, shows up) and B != H. Then the identities of the feature maps, the resumable state,
gradients at empty rows, overflow safety, and each FLOPs function against torch's FlopCounterMode.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cab import ops

DT = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)
B, H, L, D = 4, 2, 37, 6  # B != H; L prime: no chunk or block size divides it


def rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=DT)


def padding(g, batch=B, length=L, empty_row=True):
    """(B, L) key_padding_mask, different in every row: none / a suffix / interior + leading / all padding."""
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[1, length - 9 :] = True
    pad[2] = torch.rand(length, generator=g) < 0.3
    pad[2, :3] = True
    if empty_row:
        pad[3] = True
    else:
        pad[3, length // 2 :] = True
    return pad


def softmax_reference(scores, allowed):
    """float64 softmax with -inf fill; rows with nothing allowed (NaN) -> 0."""
    if allowed is None:
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)


def lse_reference(scores, allowed):
    return torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def band_reference(length, before, after, block, exact, causal):
    """The window's allowed (L, L) mask, entry by entry."""
    c = max(1, min(block or ops.window_block_size(before, after), length))
    m = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        start = (i // c) * c
        for j in range(length):
            ok = (i - before <= j <= i + after) if exact else (start - before <= j < start + c + after)
            m[i, j] = ok and (j <= i or not causal)
    return m


# ---------------------------------------------------------------------------------------------
# case makers and references


def make_softmax(g, causal):
    scores = rand(g, B, H, L, L) * 3
    return dict(scores=scores, allowed=ops.allowed_mask(padding(g), L, L, causal))


def make_attention(g, causal, len_q=L):
    pad = padding(g)
    return dict(q=rand(g, B, H, len_q, D), k=rand(g, B, H, L, D), v=rand(g, B, H, L, D + 1),
                allowed=ops.allowed_mask(pad, len_q, L, causal), scale=0.7)


def attention_reference(q, k, v, allowed, scale):
    return softmax_reference((q @ k.transpose(-1, -2)) * scale, allowed) @ v


def make_merge(g):
    inputs = make_attention(g, causal=True)
    part = torch.randint(0, 3, (L,), generator=g)  # keys dealt into 3 disjoint sets
    return dict(inputs=inputs, part=part)


def merge_fast(inputs, part):
    parts = []
    for p in range(3):
        allowed = inputs["allowed"] & (part == p)
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        parts.append(ops.softmax_attention(q, k, v, allowed, inputs["scale"], return_lse=True))
    return ops.merge_softmax_parts(parts, return_lse=True)


def merge_reference(inputs, part):
    scores = (inputs["q"] @ inputs["k"].transpose(-1, -2)) * inputs["scale"]
    return attention_reference(**inputs), lse_reference(scores, inputs["allowed"].expand_as(scores))


WINDOWS = {  # name: window_attention keywords (before, after and the rest)
    "local-causal": dict(before=5, after=0),
    "local": dict(before=4, after=4, block=8),
    "asymmetric": dict(before=2, after=7, block=5),
    "segment-ls": dict(before=3, after=3, block=6, exact=False),
    "halo": dict(before=3, after=3, block=8, exact=False),
    "halo-causal": dict(before=3, after=0, block=8, exact=False, causal=True),
    "lsda-groups-causal": dict(before=0, after=0, block=7, exact=False, causal=True),
    "zoology-wide": dict(before=40, after=0),  # window longer than the sequence
}


def make_window(g, spec, mask="padding", labels=False, self_score=None):
    q, k, v = rand(g, B, H, L, D), rand(g, B, H, L, D), rand(g, B, H, L, 3)
    pad = padding(g)
    inputs = dict(q=q, k=k, v=v, spec=spec, scale=0.6, self_score=self_score)
    if mask == "padding":
        inputs["key_padding_mask"] = pad
    elif mask == "valid":
        inputs["key_valid"] = ~pad
    elif mask == "valid-per-head":
        inputs["key_valid"] = torch.rand(B, H, L, generator=g) > 0.3
    inputs["labels"] = torch.randint(0, 3, (B, H, L), generator=g) if labels else None
    return inputs


def window_fast(q, k, v, spec, scale, self_score, labels, key_padding_mask=None, key_valid=None):
    return ops.window_attention(q, k, v, **spec, scale=scale, self_score=self_score, labels=labels,
                                key_padding_mask=key_padding_mask, key_valid=key_valid, return_lse=True)


def window_reference(q, k, v, spec, scale, self_score, labels, key_padding_mask=None, key_valid=None):
    spec = dict(exact=True, block=None, causal=False) | spec
    allowed = band_reference(L, spec["before"], spec["after"], spec["block"], spec["exact"], spec["causal"])[None, None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    if key_valid is not None:
        allowed = allowed & (key_valid[:, None, None, :] if key_valid.dim() == 2 else key_valid[:, :, None, :])
    if labels is not None:
        allowed = allowed & (labels[..., :, None] == labels[..., None, :])
    allowed = allowed.expand(B, H, L, L)
    scores = (q @ k.transpose(-1, -2)) * scale
    if self_score is not None:
        scores = torch.where(torch.eye(L, dtype=torch.bool), torch.full_like(scores, self_score), scores)
    return softmax_reference(scores, allowed) @ v, lse_reference(scores, allowed)


def make_recurrence(g, kind, dv, chunk_size, state=True, length=L):
    q, k, v = rand(g, B, H, length, D), rand(g, B, H, length, D), rand(g, B, H, length, dv)
    log_decay = {
        "none": None,
        "head": -torch.rand(H, generator=g, dtype=DT),
        "position": -2 * torch.rand(B, H, length, generator=g, dtype=DT),
        "channel": -2 * torch.rand(B, H, length, D, generator=g, dtype=DT),
    }[kind]
    s0 = rand(g, B, H, D, dv) if state else None
    return dict(q=q, k=k, v=v, log_decay=log_decay, initial_state=s0, chunk_size=chunk_size)


def recurrence_fast(chunk_size, **inputs):
    return ops.causal_recurrence(**inputs, chunk_size=chunk_size, return_final_state=True)


def recurrence_reference(chunk_size, **inputs):
    return ops.causal_recurrence_reference(**inputs)


SELECTIVE = {  # Mamba's selective scan: which optional parts each case turns on
    "plain": dict(),
    "mamba-causal": dict(bias=True, softplus=True, proj=True),
    "mamba-reverse-padded": dict(bias=True, softplus=True, proj=True, keep=True, reverse=True),
    "padded-no-skip": dict(keep=True, skip=False, softplus=True),
    "states=5-reverse": dict(states=5, reverse=True, bias=True),
}


def make_selective(g, bias=False, softplus=False, proj=False, keep=False, reverse=False, skip=True, states=16):
    """Inputs of ops.selective_scan: E = 7 channels, R = 3 (W_Δ's rank), N = `states`; keep with padding that differs
    per row (one row all padding)."""
    e, rank = 7, 3
    delta = rand(g, B, L, rank if proj else e) if (proj or softplus) else torch.rand(B, L, e, generator=g, dtype=DT)
    return dict(u=rand(g, B, L, e), delta=delta, A=-3 * torch.rand(e, states, generator=g, dtype=DT),
                Bm=rand(g, B, L, states), Cm=rand(g, B, L, states), D=rand(g, e) if skip else None,
                delta_bias=rand(g, e) if bias else None, delta_softplus=softplus,
                keep=(~padding(g)).to(DT) if keep else None, reverse=reverse,
                delta_proj=rand(g, e, rank) / 2 if proj else None)


def selective_reference(**inputs):
    return ops.selective_scan_reference(**inputs)[0]


def make_short_conv(g, silu, reverse, sliced=False):
    """sliced: x is channels 2..8 of a wider tensor (rows 12 apart), as mamba's chunk of W_in's output."""
    x = rand(g, B, L, 12)[..., 2:9] if sliced else rand(g, B, L, 7)
    return dict(x=x, weight=rand(g, 7, 4), bias=rand(g, 7), silu=silu, reverse=reverse)


def make_linear(g, causal, normalize, kind="none", len_q=L, positive=True):
    fmap = ops.elu_feature_map if positive else (lambda x: x)
    pad = padding(g, empty_row=not causal)  # causal: row 2's leading padding already gives empty prefixes
    inputs = dict(phi_q=fmap(rand(g, B, H, len_q, D)), phi_k=fmap(rand(g, B, H, L, D)), v=rand(g, B, H, L, 5),
                  causal=causal, key_padding_mask=pad, normalize=normalize, eps=1e-3)
    if kind != "none":
        inputs["log_decay"] = make_recurrence(g, kind, 1, 8)["log_decay"]
        inputs["chunk_size"] = 8
    return inputs


def linear_reference(chunk_size=None, **inputs):
    return ops.linear_attention_reference(**inputs)


def make_pool(g, segments, heads):
    shape = (B, H, L, D) if heads else (B, L, D)
    return dict(t=rand(g, *shape), keep=~padding(g), num_segments=segments)


def weights_fast(t, keep, num_segments):
    w = ops.segment_weights(keep, num_segments, dtype=DT)
    return w[:, None] @ t if t.dim() == 4 else w @ t


def weights_reference(t, keep, num_segments):
    return ops.segment_means_reference(t, keep, num_segments)[0]


def make_causal_pool(g, segments):
    return dict(t=rand(g, B, H, L, D), keep=~padding(g), num_segments=segments)


def causal_pool_chunked(t, keep, num_segments, chunk=5):
    """causal_segment_means in chunks of queries from one rank_prefix (how aggregated pools)."""
    prefix = ops.rank_prefix(t, keep)
    parts = [ops.causal_segment_means_of(prefix, num_segments, s, min(s + chunk, L)) for s in range(0, L, chunk)]
    return torch.cat([m for m, _ in parts], dim=2), torch.cat([v for _, v in parts], dim=1)


def make_prefix(g, layout):
    keep = ~padding(g)
    if layout == "BHLD":
        return dict(t=rand(g, B, H, L, D), keep=keep, dim=2)
    return dict(t=rand(g, B, L, H, D), keep=keep, dim=1)  # gaussian.py's layout


def prefix_reference(t, keep, dim):
    out = torch.zeros_like(t)
    for bi in range(t.shape[0]):
        for i in range(L):
            real = [j for j in range(i + 1) if keep[bi, j]]
            if real:
                out[bi].select(dim - 1, i).copy_(t[bi].index_select(dim - 1, torch.tensor(real)).mean(dim - 1))
    return out


def make_unfold(g, left, right, start, stop):
    return dict(t=rand(g, B, H, L, D), keep=~padding(g), left=left, right=right, start=start, stop=stop)


def unfold_fast(t, keep, left, right, start, stop):
    return ops.unfold_windows(t, left, right, start, stop), ops.window_valid(keep, left, right, start, stop)


def unfold_reference(t, keep, left, right, start, stop):
    w = left + 1 + right
    out = t.new_zeros(B, H, stop - start, w, D)
    valid = torch.zeros(B, stop - start, w, dtype=torch.bool)
    for i in range(start, stop):
        for s in range(w):
            j = i - left + s
            if 0 <= j < L:
                out[:, :, i - start, s] = t[:, :, j]
                valid[:, i - start, s] = keep[:, j]
    return out, valid


# ---------------------------------------------------------------------------------------------
# the table


def _cases():
    cases = []
    for causal in (False, True):
        cases.append((f"masked_softmax-causal={causal}", lambda scores, allowed: ops.masked_softmax(scores, allowed),
                      softmax_reference, lambda g, c=causal: make_softmax(g, c)))
        cases.append((f"masked_softmax_lse-causal={causal}", ops.masked_softmax_lse,
                      lambda scores, allowed: (softmax_reference(scores, allowed),
                                               lse_reference(scores, allowed.expand_as(scores))),
                      lambda g, c=causal: make_softmax(g, c)))
        cases.append((f"softmax_attention-causal={causal}", ops.softmax_attention, attention_reference,
                      lambda g, c=causal: make_attention(g, c)))
    cases.append(("softmax_attention-cross", ops.softmax_attention, attention_reference,
                  lambda g: make_attention(g, False, len_q=11)))
    cases.append(("merge_softmax_parts", merge_fast, merge_reference, make_merge))
    for name, spec in WINDOWS.items():
        cases.append((f"window-{name}", window_fast, window_reference, lambda g, s=spec: make_window(g, s)))
    cases.append(("window-key_valid", window_fast, window_reference,
                  lambda g: make_window(g, WINDOWS["local"], "valid")))
    cases.append(("window-key_valid-per-head", window_fast, window_reference,
                  lambda g: make_window(g, WINDOWS["halo"], "valid-per-head")))
    cases.append(("window-no-mask", window_fast, window_reference,
                  lambda g: make_window(g, WINDOWS["asymmetric"], None)))
    for name in ("halo-causal", "lsda-groups-causal", "zoology-wide"):  # no key mask: empty-row zeroing skipped
        cases.append((f"window-{name}-no-mask", window_fast, window_reference,
                      lambda g, s=WINDOWS[name]: make_window(g, s, None)))
    for exact in (True, False):  # Reformer in sorted order: buckets as labels, its self score
        spec = dict(before=8, after=0 if exact else 8, block=8, exact=exact)
        cases.append((f"window-reformer-exact={exact}", window_fast, window_reference,
                      lambda g, s=spec: make_window(g, s, labels=True, self_score=-5.0)))
        cases.append((f"window-reformer-exact={exact}-no-mask", window_fast, window_reference,
                      lambda g, s=spec: make_window(g, s, None, labels=True, self_score=-5.0)))
    cases.append(("unfold_windows", unfold_fast, unfold_reference, lambda g: make_unfold(g, 4, 4, 0, L)))
    cases.append(("unfold_windows-causal-slice", unfold_fast, unfold_reference, lambda g: make_unfold(g, 8, 0, 5, 30)))
    for kind in ops.DECAY_KINDS:
        for dv, chunk in ((4, 8), (4, 64), (20, 16), (20, 36), (1, 5)):
            if kind != "channel" and dv == 1:
                continue
            cases.append((f"recurrence-{kind}-dv={dv}-chunk={chunk}", recurrence_fast, recurrence_reference,
                          lambda g, k=kind, v=dv, c=chunk: make_recurrence(g, k, v, c)))
    for causal in (False, True):
        for normalize in (True, False):
            cases.append((f"linear-causal={causal}-normalize={normalize}", ops.linear_attention, linear_reference,
                          lambda g, c=causal, n=normalize: make_linear(g, c, n)))
    cases.append(("linear-cross", ops.linear_attention, linear_reference,
                  lambda g: make_linear(g, False, True, len_q=13)))
    for kind in ("head", "position", "channel"):
        cases.append((f"linear-causal-decay={kind}", ops.linear_attention, linear_reference,
                      lambda g, k=kind: make_linear(g, True, True, k)))
        cases.append((f"linear-causal-decay={kind}-unnormalized-silu", ops.linear_attention, linear_reference,
                      lambda g, k=kind: make_linear(g, True, False, k, positive=False)))
    for segments in (1, 3, 5, 30):  # 30 > the real tokens of rows 1-3: repeated tokens
        for heads in (False, True):
            cases.append((f"segment_means-S={segments}-heads={heads}", ops.segment_means, ops.segment_means_reference,
                          lambda g, s=segments, h=heads: make_pool(g, s, h)))
        cases.append((f"segment_weights-S={segments}", weights_fast, weights_reference,
                      lambda g, s=segments: make_pool(g, s, True)))
        cases.append((f"causal_segment_means-S={segments}", ops.causal_segment_means,
                      ops.causal_segment_means_reference,
                      lambda g, s=segments: make_causal_pool(g, s)))
        cases.append((f"causal_segment_means_of-chunked-S={segments}", causal_pool_chunked,
                      ops.causal_segment_means_reference,
                      lambda g, s=segments: make_causal_pool(g, s)))
    for name, spec in SELECTIVE.items():
        cases.append((f"selective_scan-{name}", ops.selective_scan, selective_reference,
                      lambda g, s=spec: make_selective(g, **s)))
    for silu in (True, False):
        for reverse in (False, True):
            cases.append((f"short_conv-silu={silu}-reverse={reverse}", ops.short_conv, ops.short_conv_reference,
                          lambda g, a=silu, r=reverse: make_short_conv(g, a, r)))
    cases.append(("short_conv-slice", ops.short_conv, ops.short_conv_reference,
                  lambda g: make_short_conv(g, True, True, sliced=True)))
    for layout in ("BHLD", "BLHD"):
        cases.append((f"causal_prefix_mean-{layout}", ops.causal_prefix_mean, prefix_reference,
                      lambda g, lay=layout: make_prefix(g, lay)))
    return cases


CASES = _cases()


@pytest.mark.parametrize("name, fast, reference, make", CASES, ids=[c[0] for c in CASES])
def test_fast_equals_reference(name, fast, reference, make):
    inputs = make(torch.Generator().manual_seed(hash(name) % 2**31))
    got, want = fast(**inputs), reference(**inputs)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name}: {m}")


def test_cases_see_masks():
    """The inputs exercise what they claim: padding changes the results, and some rows are empty."""
    g = torch.Generator().manual_seed(0)
    inputs = make_window(g, WINDOWS["local"])
    out, lse = window_fast(**inputs)
    nopad, _ = window_fast(**(inputs | dict(key_padding_mask=None)))
    assert not torch.allclose(out, nopad)
    assert torch.isinf(lse[3]).all() and (out[3] == 0).all()  # the all-padding row: nothing allowed
    assert torch.isfinite(lse[0]).all()


# ---------------------------------------------------------------------------------------------
# masks and softmax conventions


def test_masked_softmax_empty_row_gradient_is_finite_zero():
    scores = torch.randn(2, 5, dtype=DT, requires_grad=True)
    allowed = torch.tensor([[True, False, True, False, False], [False] * 5])
    p = ops.masked_softmax(scores, allowed)
    assert (p[1] == 0).all() and torch.allclose(p[0].sum(), torch.tensor(1.0, dtype=DT))
    (p * torch.randn(2, 5, dtype=DT)).sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[1] == 0).all() and (scores.grad[0, 1] == 0)


def test_merge_and_window_gradients_finite_at_empty_rows():
    g = torch.Generator().manual_seed(1)
    inputs = make_window(g, WINDOWS["halo"])
    for name in ("q", "k", "v"):
        inputs[name].requires_grad_(True)
    out, lse = window_fast(**inputs)
    merged = ops.merge_softmax_parts([(out, lse), (out * 2, lse - 1)])
    merged.sum().backward()
    assert all(torch.isfinite(inputs[n].grad).all() for n in ("q", "k", "v"))


@pytest.mark.parametrize("spec", ["local-causal", "halo", "asymmetric"])
def test_window_gradients_equal_dense(spec):
    g = torch.Generator().manual_seed(14)
    inputs = make_window(g, WINDOWS[spec])
    grads = []
    for fn in (window_fast, window_reference):
        leaves = {n: inputs[n].clone().requires_grad_(True) for n in ("q", "k", "v")}
        out, lse = fn(**(inputs | leaves))
        (out.square().sum() + torch.where(torch.isfinite(lse), lse, 0).sum()).backward()
        grads.append([leaves[n].grad for n in ("q", "k", "v")])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)


def test_allowed_and_sdpa_masks():
    pad = padding(torch.Generator().manual_seed(2))
    assert ops.allowed_mask(None, 3, 4) is None
    assert ops.allowed_mask(pad, 5, L).shape == (B, 1, 1, L)
    both = ops.allowed_mask(pad, 5, L, causal=True)
    assert both.shape == (B, 1, 5, L) and torch.equal(both[0, 0], torch.ones(5, L, dtype=torch.bool).tril())
    assert torch.equal(both[1, 0, 4], ~pad[1] & (torch.arange(L) <= 4))
    assert ops.sdpa_mask(None, True, 5, 5) == (None, True)
    mask, is_causal = ops.sdpa_mask(pad, True, 5, L)
    assert not is_causal and torch.equal(mask, both)
    assert torch.equal(ops.keep_mask(pad, B, L), ~pad) and ops.keep_mask(None, 2, 3).all()
    t = torch.ones(B, H, L, 2)
    assert torch.equal(ops.zero_padding(t, pad)[:, 0, :, 0], (~pad).float())
    assert torch.equal(ops.zero_padding(torch.ones(B, L, 2), pad)[..., 1], (~pad).float())


def test_window_allowed_matches_band_reference():
    for spec in WINDOWS.values():
        spec = dict(exact=True, block=None, causal=False) | spec
        want = band_reference(L, spec["before"], spec["after"], spec["block"], spec["exact"], spec["causal"])
        assert torch.equal(ops.window_allowed(L, **spec)[0, 0], want)


# ---------------------------------------------------------------------------------------------
# recurrence: resumable state, overflow safety, Mamba's mapping


@pytest.mark.parametrize("kind", ops.DECAY_KINDS)
@pytest.mark.parametrize("dv", [3, 17])
def test_recurrence_resumes(kind, dv):
    g = torch.Generator().manual_seed(3)
    inputs = make_recurrence(g, kind, dv, chunk_size=8, state=False)
    whole, final = ops.causal_recurrence(**inputs, return_final_state=True)
    split = 13  # not a multiple of the chunk
    first, mid = ops.causal_recurrence(**_slice(inputs, 0, split), return_final_state=True)
    second, last = ops.causal_recurrence(**_slice(inputs, split, L), initial_state=mid, return_final_state=True)
    torch.testing.assert_close(torch.cat([first, second], dim=2), whole, **TOL)
    torch.testing.assert_close(last, final, **TOL)
    # and token by token (decoding), the first five steps
    state = None
    for t in range(5):
        out, state = ops.causal_recurrence(**_slice(inputs, t, t + 1), initial_state=state, return_final_state=True)
        torch.testing.assert_close(out[:, :, 0], whole[:, :, t], **TOL)


def _slice(inputs, lo, hi):
    out = dict(inputs, q=inputs["q"][:, :, lo:hi], k=inputs["k"][:, :, lo:hi], v=inputs["v"][:, :, lo:hi])
    if inputs["log_decay"] is not None and inputs["log_decay"].dim() > 1:
        out["log_decay"] = inputs["log_decay"][:, :, lo:hi]
    out.pop("initial_state", None)
    return out


@pytest.mark.parametrize("kind", ["position", "channel"])
@pytest.mark.parametrize("dv", [1, 16])
def test_recurrence_strong_decay_never_overflows(kind, dv):
    """float32, g = -60 per step over 128 steps: a cumulative exponent of -7680 (exp(+7680) would be inf)."""
    g = torch.Generator().manual_seed(4)
    length = 128
    q, k, v = (torch.randn(1, 2, length, 4, generator=g) for _ in range(3))
    v = v[..., :1].expand(-1, -1, -1, dv).contiguous()
    shape = (1, 2, length) if kind == "position" else (1, 2, length, 4)
    log_decay = -60 * torch.rand(*shape, generator=g)
    out, state = ops.causal_recurrence(q, k, v, log_decay, chunk_size=64, return_final_state=True)
    assert torch.isfinite(out).all() and torch.isfinite(state).all()
    want, _ = ops.causal_recurrence_reference(q.double(), k.double(), v.double(), log_decay.double())
    torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=1e-4)
    for t in (q, k, v):
        t.requires_grad_(True)
    ops.causal_recurrence(q, k, v, log_decay.requires_grad_(True), chunk_size=64).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, log_decay))


@pytest.mark.parametrize("kind", ops.DECAY_KINDS)
@pytest.mark.parametrize("dv", [2, 16])
def test_recurrence_shared_query_key_head(kind, dv):
    """q, k with one head broadcast over v's H heads equal the expanded copies (Mamba's B_t, C_t)."""
    inputs = make_recurrence(torch.Generator().manual_seed(16), kind, dv, chunk_size=32)
    q1, k1 = inputs["q"][:, :1], inputs["k"][:, 1:]
    got = ops.causal_recurrence(**(inputs | dict(q=q1, k=k1)), return_final_state=True)
    want = ops.causal_recurrence(**(inputs | dict(q=q1.expand(-1, H, -1, -1), k=k1.expand(-1, H, -1, -1))),
                                 return_final_state=True)
    ref = ops.causal_recurrence_reference(**{n: x for n, x in (inputs | dict(q=q1, k=k1)).items() if n != "chunk_size"})
    for a, b, r in zip(got, want, ref):
        torch.testing.assert_close(a, b, **TOL)
        torch.testing.assert_close(a, r, **TOL)


def test_recurrence_is_mambas_selective_scan():
    """Heads = E channels, Dk = N states, Dv = 1: h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t, y_t = h_t·C_t."""
    g = torch.Generator().manual_seed(5)
    b, length, e, n = 2, 29, 3, 4
    x, delta = rand(g, b, length, e), torch.nn.functional.softplus(rand(g, b, length, e))
    A = -torch.rand(e, n, generator=g, dtype=DT) * 3
    Bm, Cm = rand(g, b, length, n), rand(g, b, length, n)
    h = torch.zeros(b, e, n, dtype=DT)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[..., None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    q, k = Cm[:, None], Bm[:, None]  # (B, 1, L, N): shared by the E channels, broadcast
    v = (delta * x).transpose(1, 2)[..., None]  # (B, E, L, 1)
    log_decay = delta.transpose(1, 2)[..., None] * A[None, :, None, :]  # (B, E, L, N)
    out, state = ops.causal_recurrence(q, k, v, log_decay, chunk_size=8, return_final_state=True)
    torch.testing.assert_close(out[..., 0].transpose(1, 2), torch.stack(ys, dim=1), **TOL)
    torch.testing.assert_close(state[..., 0], h, **TOL)
    factored = ops.causal_recurrence(q, k, v, (delta.transpose(1, 2), A), return_final_state=True)  # g never built
    torch.testing.assert_close(factored[0], out, **TOL)
    torch.testing.assert_close(factored[1], state, **TOL)


@pytest.mark.parametrize("decay", ["full", "factored", "broadcast"])
@pytest.mark.parametrize("shared, with_state, blocks", [(True, False, None), (False, True, "kept"),
                                                        (True, True, "recomputed")])
def test_recurrence_dv1_gradients_equal_reference(monkeypatch, decay, shared, with_state, blocks):
    """The Dv = 1 per-channel step loop has a hand-written backward: every gradient equals autograd's through
    the reference loop, also over blocks of positions whose states are kept, or recomputed (long inputs)."""
    import cab.ops.recurrence as rec

    monkeypatch.setenv("CAB_NATIVE_KERNELS", "0")  # the torch form (the compiled one: test_compiled_scan_*)
    if blocks:  # blocks of 5 positions
        monkeypatch.setattr(rec, "SCAN_BLOCK_ELEMENTS", 5 * B * H * D)
        if blocks == "recomputed":
            monkeypatch.setattr(rec, "SCAN_KEEP_ELEMENTS", 10)
    g = torch.Generator().manual_seed(21)
    heads = 1 if shared else H
    q, k = rand(g, B, heads, L, D), rand(g, B, heads, L, D)
    v, s0 = rand(g, B, H, L, 1), rand(g, B, H, D, 1) if with_state else None
    delta, rates = torch.rand(B, H, L, generator=g, dtype=DT), -3 * torch.rand(H, D, generator=g, dtype=DT)
    log_decay = {"full": lambda: delta[..., None] * rates[:, None, :], "factored": lambda: (delta, rates),
                 "broadcast": lambda: -2 * torch.rand(1, H, L, D, generator=g, dtype=DT)}[decay]()
    leaves = [t.requires_grad_(True) for t in (q, k, v, s0, *(log_decay if decay == "factored" else (log_decay,)))
              if t is not None]
    w_out, w_state = rand(g, B, H, L, 1), rand(g, B, H, D, 1)
    grads = []
    for fn in (ops.causal_recurrence, ops.causal_recurrence_reference):
        extra = dict(return_final_state=True) if fn is ops.causal_recurrence else {}
        out, state = fn(q, k, v, log_decay, initial_state=s0, **extra)
        grads.append(torch.autograd.grad((out * w_out).sum() + (state * w_state).sum(), leaves))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)


def _compiler_available() -> bool:
    import shutil

    return bool(shutil.which("ninja") or importlib.util.find_spec("ninja")) and bool(
        shutil.which("c++") or shutil.which("g++"))


def test_compiled_scan_is_built_where_a_compiler_is():
    """Where a C++ compiler and ninja exist (CI, the README's set-up), mamba's scan must not fall back silently."""
    from cab.ops.native import kernel_status

    if not _compiler_available():
        pytest.skip("no C++ compiler or ninja here: the torch form runs (cab/ops/native.py)")
    assert kernel_status() == {"channel_scan": "compiled"}


@pytest.mark.parametrize("n, with_state, length, heads", [(16, False, 37, 3), (16, True, 300, 64), (5, True, 37, 3)])
def test_compiled_scan_equals_reference(monkeypatch, n, with_state, length, heads):
    """Mamba's case (factored decay, q and k shared by the heads, Dv = 1) through the compiled CPU kernel: output,
    final state and every gradient equal the step loop's. N = 16 runs the unrolled kernel, N = 5 the general
    one; 64 heads × 16 states × 300 positions run 3 chunks of kept states in the backward."""
    from cab.ops.native import channel_scan_module

    monkeypatch.setenv("CAB_NATIVE_KERNELS", "1")
    if channel_scan_module() is None:
        pytest.skip("the compiled scan is unavailable here (test_compiled_scan_is_built_where_a_compiler_is)")
    g = torch.Generator().manual_seed(33)
    b = 2
    q, k = rand(g, b, 1, length, n), rand(g, b, 1, length, n)
    v, s0 = rand(g, b, heads, length, 1), rand(g, b, heads, n, 1) if with_state else None
    delta, rates = torch.rand(b, heads, length, generator=g, dtype=DT), -3 * torch.rand(heads, n, generator=g, dtype=DT)
    leaves = [t.requires_grad_(True) for t in (q, k, v, s0, delta, rates) if t is not None]
    w_out, w_state = rand(g, b, heads, length, 1), rand(g, b, heads, n, 1)
    results = []
    for fn in (ops.causal_recurrence, ops.causal_recurrence_reference):
        extra = dict(return_final_state=True) if fn is ops.causal_recurrence else {}
        out, state = fn(q, k, v, (delta, rates), initial_state=s0, **extra)
        grads = torch.autograd.grad((out * w_out).sum() + (state * w_state).sum(), leaves)
        results.append((out, state, *grads))
    for a, r in zip(*results):
        torch.testing.assert_close(a, r, **TOL)


def test_compiled_scan_float32_and_switch(monkeypatch):
    """float32 (the inlined exp) stays within float32 rounding of the float64 step loop; CAB_NATIVE_KERNELS=0
    runs the torch form, which the compiled one equals."""
    from cab.ops.native import kernel_status

    g = torch.Generator().manual_seed(34)
    q, k, v = rand(g, 3, 1, 50, 16), rand(g, 3, 1, 50, 16), rand(g, 3, 8, 50, 1)
    delta, rates = 2 * torch.rand(3, 8, 50, generator=g, dtype=DT), -20 * torch.rand(8, 16, generator=g, dtype=DT)
    want, _ = ops.causal_recurrence_reference(q, k, v, (delta, rates))
    runs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("CAB_NATIVE_KERNELS", flag)
        runs[flag] = ops.causal_recurrence(*(t.float() for t in (q, k, v)), (delta.float(), rates.float()))
        torch.testing.assert_close(runs[flag].double(), want, atol=1e-5, rtol=1e-4)
    assert kernel_status()["channel_scan"].startswith("torch")  # still "0"
    torch.testing.assert_close(runs["1"], runs["0"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("name", [*SELECTIVE, "short_conv", "short_conv-reverse", "short_conv-slice"])
def test_selective_ops_gradients_equal_reference(monkeypatch, native, name):
    """Mamba's ops have hand-written backwards where compiled (CAB_NATIVE_KERNELS=1): every gradient equals
    autograd's through the references, compiled and in torch, padding and the reversed direction included."""
    monkeypatch.setenv("CAB_NATIVE_KERNELS", native)
    g = torch.Generator().manual_seed(41)
    if name.startswith("short_conv"):
        inputs = make_short_conv(g, True, name.endswith("reverse"), sliced=name.endswith("slice"))
        fast, ref = ops.short_conv, ops.short_conv_reference
    else:
        inputs, fast, ref = make_selective(g, **SELECTIVE[name]), ops.selective_scan, selective_reference
    leaves = {n: t.requires_grad_(True) for n, t in inputs.items()
              if isinstance(t, torch.Tensor) and t.is_floating_point() and n != "keep"}
    grads = []
    for fn in (fast, ref):
        out = fn(**inputs)
        weights = torch.linspace(-1, 1, out.numel(), dtype=DT).reshape(out.shape)
        grads.append(torch.autograd.grad((out * weights).sum(), list(leaves.values())))
    for leaf, a, b in zip(leaves, *grads):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name} d{leaf}: {m}")


def test_selective_scan_float32_compiled_equals_torch(monkeypatch):
    """float32 through the compiled kernels (inlined exp, vector log1p) stays within float32 rounding of the float64
    reference, as the torch form does: Mamba's whole branch, softplus, W_Δ, padding and reverse included."""
    g = torch.Generator().manual_seed(42)
    inputs = make_selective(g, **SELECTIVE["mamba-reverse-padded"])
    want = selective_reference(**inputs)
    single = {n: t.float() if isinstance(t, torch.Tensor) else t for n, t in inputs.items()}
    for flag in ("1", "0"):
        monkeypatch.setenv("CAB_NATIVE_KERNELS", flag)
        torch.testing.assert_close(ops.selective_scan(**single).double(), want, atol=1e-4, rtol=1e-4)


def test_compiled_float32_exp_is_accurate_over_its_range():
    """The kernels' inlined float32 exp (through short_conv's SiLU, x / (1 + e^-x)) within 5e-7 relative of float64
    from -80 to 30: the range reduction x - n·ln2 must keep its two-part constant (a compiler allowed to reassociate
    folds it into one, and the error grows with |n| to 4e-6 at x = -72)."""
    x = torch.linspace(-80, 30, 100_001, dtype=DT).float().reshape(1, -1, 1)
    got = ops.short_conv(x, torch.ones(1, 1), torch.zeros(1), silu=True).double()
    exact = x.double() / (1 + torch.exp(-x.double()))
    assert float(((got - exact).abs() / exact.abs()).max()) < 5e-7


def test_log_decay_from_cumulative_and_kinds():
    a = -torch.cumsum(torch.rand(2, 3, 10, dtype=DT), dim=-1)
    step = ops.log_decay_from_cumulative(a)
    assert (step[..., 0] == 0).all() and (step <= 0).all()
    torch.testing.assert_close(torch.cumsum(step, -1), a - a[..., :1], **TOL)
    q = (2, 3, 10, 4)
    assert [ops.decay_kind(x, q) for x in (None, torch.zeros(3), torch.zeros(2, 3, 10), torch.zeros(1, 3, 10, 4))] \
        == ["none", "head", "position", "channel"]
    with pytest.raises(ValueError):
        ops.decay_kind(torch.zeros(2, 3, 9), q)


# ---------------------------------------------------------------------------------------------
# pooling: the binning rule


def test_binning_rule_examples():
    keep = torch.tensor([[True] * 5 + [False] * 3])
    ids, counts = ops.segment_ids(keep, 2)
    assert ids.tolist() == [[0, 0, 1, 1, 1, -1, -1, -1]] and counts.tolist() == [[2, 3]]
    start, end = ops.segment_bounds(torch.tensor([3]), 5)  # S > n: single tokens 0, 0, 1, 1, 2
    assert start.tolist() == [[0, 0, 1, 1, 2]] and (end - start).tolist() == [[1] * 5]
    w = ops.segment_weights(torch.tensor([[True, False, True, True]]), 2, dtype=DT)  # interior padding: ranks
    assert w.tolist() == [[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]]


def test_appended_padding_moves_nothing():
    g = torch.Generator().manual_seed(6)
    t, keep = rand(g, 2, H, 20, D), torch.ones(2, 20, dtype=torch.bool)
    keep[1, 15:] = False
    longer_t = torch.cat([t, rand(g, 2, H, 7, D)], dim=2)
    longer_keep = torch.cat([keep, torch.zeros(2, 7, dtype=torch.bool)], dim=1)
    for s in (3, 16, 25):
        short, _ = ops.segment_means(t, keep, s)
        long, _ = ops.segment_means(longer_t, longer_keep, s)
        torch.testing.assert_close(short, long, **TOL)
    short, _ = ops.causal_segment_means(t, keep, 4)
    long, _ = ops.causal_segment_means(longer_t, longer_keep, 4)
    torch.testing.assert_close(short, long[:, :, :20], **TOL)


# ---------------------------------------------------------------------------------------------
# feature maps: their identities


def test_taylor_identity():
    g = torch.Generator().manual_seed(7)
    a, b = rand(g, 9, 16), rand(g, 9, 16)
    s = (a * b).sum(-1) / 4.0  # a·b/√f, f = 16
    phi_a, phi_b = ops.taylor_feature_map(a), ops.taylor_feature_map(b)
    assert phi_a.shape[-1] == ops.taylor_feature_size(16) == 153
    torch.testing.assert_close((phi_a * phi_b).sum(-1), 1 + s + s**2 / 2, **TOL)


def test_cosformer_identity():
    g = torch.Generator().manual_seed(8)
    q, k = rand(g, 2, H, 7, D), rand(g, 2, H, 9, D)
    m = torch.tensor([20.0, 31.0], dtype=DT)
    fq = ops.cosformer_feature_map(q, torch.arange(7), m)
    fk = ops.cosformer_feature_map(k, torch.arange(9), m)
    i, j = torch.arange(7, dtype=DT)[:, None], torch.arange(9, dtype=DT)[None, :]
    want = (q.relu() @ k.relu().transpose(-1, -2)) * torch.cos(math.pi * (i - j) / (2 * m.view(2, 1, 1, 1)))
    torch.testing.assert_close(fq @ fk.transpose(-1, -2), want, **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_favor_stabiliser_cancels(causal):
    """Stabilised features (with, causal, their decay) give the unstabilised FAVOR+ attention exactly."""
    g = torch.Generator().manual_seed(9)
    omega = torch.stack([ops.orthogonal_gaussian(8, D, g) for _ in range(H)]).to(DT)
    q, k, v = rand(g, B, H, L, D) * 2, rand(g, B, H, L, D) * 2, rand(g, B, H, L, 3)
    pad = padding(g, empty_row=not causal)
    log_q, log_k = ops.favor_log_features(q, omega), ops.favor_log_features(k, omega)
    phi_k, log_decay = ops.favor_key_features(log_k, pad, causal)
    assert (log_decay is not None) == causal and (phi_k <= 1).all()
    tiny = torch.finfo(DT).tiny
    got = ops.linear_attention(ops.favor_query_features(log_q), phi_k, v, causal=causal, key_padding_mask=pad,
                               log_decay=log_decay, eps=tiny, chunk_size=8)
    want = ops.linear_attention_reference(torch.exp(log_q), torch.exp(log_k), v, causal=causal, key_padding_mask=pad,
                                          eps=tiny)
    torch.testing.assert_close(got, want, **TOL)
    assert not torch.allclose(got, ops.linear_attention_reference(torch.exp(log_q), torch.exp(log_k), v, causal=causal,
                                                                  eps=tiny))  # padding mattered


def test_favor_causal_keys_never_look_ahead():
    g = torch.Generator().manual_seed(15)
    log_k, pad = rand(g, B, H, L, 8) * 3, padding(g, empty_row=False)
    phi, log_decay = ops.favor_key_features(log_k, pad, causal=True)
    phi_p, log_decay_p = ops.favor_key_features(log_k[:, :, :20], pad[:, :20], causal=True)
    torch.testing.assert_close(phi[:, :, :20], phi_p, **TOL)
    torch.testing.assert_close(log_decay[:, :, :20], log_decay_p, **TOL)
    assert (log_decay <= 0).all()


def test_orthogonal_gaussian_blocks():
    w = ops.orthogonal_gaussian(10, 4, torch.Generator().manual_seed(10)).double()
    for block in (w[:4], w[4:8]):
        gram = block @ block.T
        torch.testing.assert_close(gram, torch.diag(torch.diagonal(gram)), atol=1e-5, rtol=0)
    assert w.shape == (10, 4)


# ---------------------------------------------------------------------------------------------
# FLOPs functions against torch's counter


def counted(fn, *args, **kwargs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def test_flops_softmax_and_window():
    g = torch.Generator().manual_seed(11)
    q, k, v = rand(g, 2, 3, 37, 8), rand(g, 2, 3, 29, 8), rand(g, 2, 3, 29, 5)
    assert counted(ops.softmax_attention, q, k, v) == ops.softmax_attention_flops(2, 3, 37, 29, 8, 5)
    k, v = rand(g, 2, 3, 37, 8), rand(g, 2, 3, 37, 5)
    for before, after, block in ((5, 0, None), (3, 3, 8), (70, 70, None), (0, 0, 7)):
        want = ops.window_attention_flops(2, 3, 37, 8, 5, before, after, block)
        assert counted(ops.window_attention, q, k, v, before, after, block=block) == want


@pytest.mark.parametrize("kind", ops.DECAY_KINDS)
@pytest.mark.parametrize("dv, chunk, length", [(4, 8, 37), (20, 64, 37), (20, 16, 37), (20, 32, 70), (1, 5, 12)])
def test_flops_recurrence(kind, dv, chunk, length):
    g = torch.Generator().manual_seed(12)
    inputs = make_recurrence(g, kind, dv, chunk, state=True, length=length)
    want = ops.causal_recurrence_flops(B, H, length, D, dv, chunk, kind)
    assert counted(ops.causal_recurrence, **inputs) == want


@pytest.mark.parametrize("causal", [False, True])
def test_flops_linear(causal):
    g = torch.Generator().manual_seed(13)
    inputs = make_linear(g, causal, True, "position" if causal else "none")
    decay = "position" if causal else "none"
    want = ops.linear_attention_flops(B, H, L, L, D, 5, causal=causal, chunk_size=8, decay=decay)
    assert counted(ops.linear_attention, **inputs) == want


@pytest.mark.parametrize("kind", ops.DECAY_KINDS)
def test_linear_attention_segments_carry_the_state(monkeypatch, kind):
    """Causal linear attention in segments of whole chunks (SEGMENT = 16 here: 3 segments of L = 37, the last
    partial) equals one recurrence over the whole length: outputs, final state (from an initial one), FLOPs."""
    import cab.ops.linear as linear_module

    g = torch.Generator().manual_seed(14)
    inputs = make_linear(g, True, True, kind)
    inputs["chunk_size"] = 8
    s0 = rand(g, B, H, D, 6)  # (B, H, F, Dv + 1)
    whole = ops.linear_attention(**inputs, initial_state=s0, return_final_state=True)  # SEGMENT >= L: one piece
    monkeypatch.setattr(linear_module, "SEGMENT", 16)
    pieces = ops.linear_attention(**inputs, initial_state=s0, return_final_state=True)
    for a, b in zip(pieces, whole):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(pieces[0], linear_reference(**inputs, initial_state=s0), **TOL)
    want = ops.linear_attention_flops(B, H, L, L, D, 5, causal=True, chunk_size=8, decay=kind)
    assert counted(ops.linear_attention, **inputs) == want
