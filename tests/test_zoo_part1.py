"""The attention zoo, part 1: exact identities and references for CAB's roster.

Small dims, float64. Layers are compared through their per-head cores (`attend`) on shared random
q, k, v, or as whole layers with weights copied across.
"""

from __future__ import annotations

import pytest
import torch

from cab import Pattern, build_attention

B, H, DH = 2, 2, 8
DIM = H * DH


def make(name, pattern, seed=0, **hp):
    torch.manual_seed(seed)
    return build_attention(name, dim=DIM, num_heads=H, pattern=pattern, **hp).double().eval()


def qkv(len_q=12, len_k=None, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    len_k = len_k or len_q
    q = torch.randn(B, H, len_q, DH, generator=g, dtype=torch.double) * scale
    k = torch.randn(B, H, len_k, DH, generator=g, dtype=torch.double) * scale
    v = torch.randn(B, H, len_k, DH, generator=g, dtype=torch.double)
    return q, k, v


def padding(len_k, pad=3):
    mask = torch.zeros(B, len_k, dtype=torch.bool)
    mask[0, len_k - pad :] = True  # example 0 padded at the end, example 1 not
    return mask


def dense_softmax(q, k, v, mask=None, causal=False):
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        s = s.masked_fill(mask[:, None, None, :], float("-inf"))
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


def close(a, b, tol=1e-9):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# ---------------------------------------------------------------------------------------------
# exact attention: vanilla, flash, softmax


@pytest.mark.parametrize("pattern", list(Pattern), ids=[p.value for p in Pattern])
def test_flash_vanilla_softmax_agree_with_padding(pattern):
    ref = make("softmax", pattern)
    x = torch.randn(B, 10, DIM, dtype=torch.double)
    ctx = torch.randn(B, 14, DIM, dtype=torch.double) if pattern.is_cross else None
    mask = padding(14 if pattern.is_cross else 10)
    want = ref(x, ctx, mask)
    for name in ("vanilla", "flash"):
        layer = make(name, pattern)
        layer.load_state_dict(ref.state_dict())
        close(layer(x, ctx, mask), want)
    assert make("flash", pattern).runtime_info()["kernel"] == "not run yet"
    layer = make("flash", pattern)
    layer(x, ctx, mask)
    assert layer.runtime_info()["kernel"].startswith(("sdpa", "flash_attn"))


def test_vanilla_matches_dense_reference():
    q, k, v = qkv(9, 13)
    mask = padding(13)
    close(make("vanilla", Pattern.NONCAUSAL_CROSS).attend(q, k, v, mask), dense_softmax(q, k, v, mask))
    q, k, v = qkv(11)
    close(make("vanilla", Pattern.CAUSAL_SELF).attend(q, k, v, None), dense_softmax(q, k, v, causal=True))


# ---------------------------------------------------------------------------------------------
# identities against softmax


@pytest.mark.parametrize("pattern", [Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF], ids=lambda p: p.value)
def test_local_with_full_window_is_softmax(pattern):
    q, k, v = qkv(37)
    mask = padding(37)
    layer = make("local", pattern, window=40)
    close(layer.attend(q, k, v, mask), dense_softmax(q, k, v, mask, causal=pattern.is_causal))


def test_local_window_is_a_band():
    q, k, v = qkv(30)
    w = 4
    i = torch.arange(30)
    band = (i[None, :] - i[:, None]).abs() > w
    s = (q @ k.transpose(-1, -2) / DH**0.5).masked_fill(band, float("-inf"))
    close(make("local", Pattern.NONCAUSAL_SELF, window=w).attend(q, k, v, None), torch.softmax(s, -1) @ v)


def test_probsparse_with_every_query_selected_is_softmax():
    q, k, v = qkv(20)
    mask = padding(20)
    layer = make("probsparse", Pattern.NONCAUSAL_SELF, factor=100)
    got = layer.attend(q, k, v, mask)
    want = dense_softmax(q, k, v, mask)
    close(got[1], want[1])
    close(got[0, :, :17], want[0, :, :17])  # example 0: its real queries


def test_probsparse_lazy_queries_get_mean_value():
    q, k, v = qkv(64)
    layer = make("probsparse", Pattern.NONCAUSAL_SELF, factor=1)  # u = ⌈ln 64⌉ = 5 active queries
    out = layer.attend(q, k, v, None)
    is_mean = torch.isclose(out, v.mean(2, keepdim=True).expand_as(out)).all(-1)  # (B, H, L)
    assert (is_mean.sum(-1) == 64 - 5).all()


def test_nystromformer_with_landmarks_equal_to_length_is_softmax():
    q, k, v = qkv(10, scale=0.5)
    layer = make("nystromformer", Pattern.NONCAUSAL_SELF, num_landmarks=10, pinv_iterations=60)
    close(layer.attend(q, k, v, None), dense_softmax(q, k, v), tol=1e-6)


def test_nystromformer_pinv_converges():
    from cab.attentions.nystromformer import iterative_pinv

    a = torch.softmax(torch.randn(3, 6, 6, dtype=torch.double), -1)
    close(iterative_pinv(a, 40), torch.linalg.pinv(a), tol=1e-6)


def test_performer_error_falls_with_more_features():
    q, k, v = qkv(32, scale=0.6)
    want = dense_softmax(q, k, v)
    errors = {}
    for m in (8, 64, 512):
        errs = []
        for seed in range(4):
            layer = make("performer", Pattern.NONCAUSAL_SELF, seed=seed, num_features=m)
            errs.append((layer.attend(q, k, v, None) - want).square().mean().sqrt())
        errors[m] = torch.stack(errs).mean().item()
    assert errors[64] < 0.75 * errors[8], errors
    assert errors[512] < 0.75 * errors[64], errors
    assert errors[512] < 0.5 * errors[8], errors


def test_lara_matches_its_formula_per_query():
    """O_n = Σ_c softmax_c(μ_c·q̂_n + log ξ(q̂_n, μ_c) + log Σ_m ξ(k̂_m, μ_c) − log ξ(μ_c, μ_c)) kv_c, written
    out query by query (eval: ω = μ), with segment means over 4 segments of 6 positions."""
    q, k, v = qkv(24, scale=0.8)
    layer = make("lara", Pattern.NONCAUSAL_SELF, num_proposals=4)
    got = layer.attend(q, k, v, None)
    qs, ks = q * DH**-0.25, k * DH**-0.25
    mu = qs.view(B, H, 4, 6, DH).mean(3) + ks.view(B, H, 4, 6, DH).mean(3)  # (B, H, C, Dh)

    def log_xi(x, w):
        return (x * w).sum(-1) - 0.5 * x.square().sum(-1)

    for n in (0, 7, 23):
        weights, stats = [], []
        for c in range(4):
            w = mu[:, :, c]
            lk = log_xi(ks, w[:, :, None])  # (B, H, L)
            stats.append((torch.softmax(lk, -1)[..., None] * v).sum(2))
            weights.append((mu[:, :, c] * qs[:, :, n]).sum(-1) + log_xi(qs[:, :, n], w) + torch.logsumexp(lk, -1)
                           - log_xi(w, w))
        iw = torch.softmax(torch.stack(weights, -1), -1)  # (B, H, C)
        close(got[:, :, n], (iw[..., None] * torch.stack(stats, 2)).sum(2))


# ---------------------------------------------------------------------------------------------
# causal forms against their own quadratic / step-by-step references


def test_performer_causal_equals_quadratic_favor():
    q, k, v = qkv(70)
    layer = make("performer", Pattern.CAUSAL_SELF, num_features=16, chunk_size=16)
    phi_q = torch.exp(layer._log_features(q))  # unstabilised φ (small inputs: no overflow)
    phi_k = torch.exp(layer._log_features(k))
    a = (phi_q @ phi_k.transpose(-1, -2)).tril()
    want = (a @ v) / a.sum(-1, keepdim=True)
    close(layer.attend(q, k, v, None), want)
    # the noncausal form is the same estimator without the mask
    nc = make("performer", Pattern.NONCAUSAL_SELF, num_features=16)
    nc.omega.copy_(layer.omega)
    full = phi_q @ phi_k.transpose(-1, -2)
    close(nc.attend(q, k, v, None), (full @ v) / full.sum(-1, keepdim=True))


def test_performer_causal_stabiliser_does_not_look_ahead():
    q, k, v = qkv(40, scale=3.0)  # large logits: the stabiliser matters
    layer = make("performer", Pattern.CAUSAL_SELF, num_features=16, chunk_size=8)
    full = layer.attend(q, k, v, None)
    k2 = k.clone()
    k2[:, :, 25:] *= 4  # a much larger future key would move a global max
    close(layer.attend(q, k2, v, None)[:, :, :25], full[:, :, :25], tol=1e-10)


def test_cosformer_causal_equals_quadratic():
    q, k, v = qkv(50)
    layer = make("cosformer", Pattern.CAUSAL_SELF, max_len=64, chunk_size=16)
    i = torch.arange(50, dtype=torch.double)
    w = torch.cos(torch.pi / 2 * (i[:, None] - i[None, :]) / 64)
    a = (torch.relu(q) @ torch.relu(k).transpose(-1, -2)) * w
    a = a.tril()
    want = (a @ v) / a.sum(-1, keepdim=True).clamp_min(layer.eps)
    close(layer.attend(q, k, v, None), want)


def test_cosformer_noncausal_equals_quadratic():
    q, k, v = qkv(9, 13)
    layer = make("cosformer", Pattern.NONCAUSAL_CROSS)
    iq, ik = torch.arange(9, dtype=torch.double), torch.arange(13, dtype=torch.double)
    w = torch.cos(torch.pi / 2 * (iq[:, None] - ik[None, :]) / 13)
    a = (torch.relu(q) @ torch.relu(k).transpose(-1, -2)) * w
    close(layer.attend(q, k, v, None), (a @ v) / a.sum(-1, keepdim=True).clamp_min(layer.eps))


def abc_recurrent_reference(layer, q, k, v):
    """Step by step: z_t = logaddexp(z_{t-1}, α_t); K̃_t = e^{z_{t-1}-z_t}K̃_{t-1} + e^{α_t-z_t}k_t."""
    q = q * layer.head_dim**-0.5
    ak, av = k @ layer.compress_k, v @ layer.compress_v  # (B, H, L, s)
    s = layer.num_slots
    zk = zv = torch.full((B, H, s), float("-inf"), dtype=q.dtype)
    mk = torch.zeros(B, H, s, DH, dtype=q.dtype)
    mv = torch.zeros_like(mk)
    outs = []
    for t in range(q.shape[2]):
        nzk, nzv = torch.logaddexp(zk, ak[:, :, t]), torch.logaddexp(zv, av[:, :, t])
        mk = torch.exp(zk - nzk)[..., None] * mk + torch.exp(ak[:, :, t] - nzk)[..., None] * k[:, :, t, None]
        mv = torch.exp(zv - nzv)[..., None] * mv + torch.exp(av[:, :, t] - nzv)[..., None] * v[:, :, t, None]
        zk, zv = nzk, nzv
        p = torch.softmax((q[:, :, t, None] @ mk.transpose(-1, -2)).squeeze(-2), -1)  # (B, H, s)
        outs.append((p[..., None, :] @ mv).squeeze(-2))
    return torch.stack(outs, dim=2)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_abc_causal_equals_recurrence(chunk):
    q, k, v = qkv(45)
    layer = make("abc", Pattern.CAUSAL_SELF, num_slots=4, chunk_size=chunk)
    close(layer.attend(q, k, v, None), abc_recurrent_reference(layer, q, k, v))


def test_abc_causal_keeps_prefix_memory():
    """CAB's causal ABC uses only token t's own key/value at step t; ours reads the whole prefix."""
    q, k, v = qkv(20)
    layer = make("abc", Pattern.CAUSAL_SELF, num_slots=4)
    out = layer.attend(q, k, v, None)
    v2 = v.clone()
    v2[:, :, 3] += 5.0  # an early value must still matter at the last position
    assert not torch.allclose(layer.attend(q, k, v2, None)[:, :, -1], out[:, :, -1])


def test_abc_noncausal_is_the_last_causal_step():
    q, k, v = qkv(30)
    causal = make("abc", Pattern.CAUSAL_SELF, num_slots=4)
    nc = make("abc", Pattern.NONCAUSAL_SELF, num_slots=4)
    nc.load_state_dict(causal.state_dict())
    close(nc.attend(q, k, v, None)[:, :, -1], causal.attend(q, k, v, None)[:, :, -1])


@pytest.mark.parametrize("pattern", [Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF], ids=lambda p: p.value)
def test_s4d_convolution_equals_recurrence(pattern):
    layer = make("s4d", pattern, d_state=8, kernel_block=13)
    u = torch.randn(B, DIM, 40, dtype=torch.double)
    if pattern is Pattern.CAUSAL_SELF:
        close(layer.mix_conv(u), layer.mix_recurrent(u))
    else:  # bidirectional: the forward kernel's recurrence plus the backward kernel on the flipped input
        k = layer.kernel(40)
        fwd = torch.stack([(k[0, :, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1) for t in range(40)], -1)
        bwd = torch.stack([(k[1, :, : 40 - t - 1] * u[..., t + 1 :]).sum(-1) for t in range(40)], -1)
        close(layer.mix_conv(u), fwd + bwd)
        causal = make("s4d", Pattern.CAUSAL_SELF, d_state=8)
        causal.load_state_dict({**layer.state_dict(), "c": layer.c[:1]})
        close(causal.mix_recurrent(u), fwd)


@pytest.mark.parametrize("pattern", [Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF], ids=lambda p: p.value)
def test_longshort_equals_dense_reference(pattern):
    hp = dict(window_size=6, chunk_size=5) if pattern.is_causal else dict(window_size=5, num_landmarks=3)
    layer = make("longshort", pattern, **hp)
    x = torch.randn(B, 37, DIM, dtype=torch.double)
    mask = padding(37)
    close(layer(x, key_padding_mask=mask)[1], layer.dense_reference(x, mask)[1])
    close(layer(x)[0], layer.dense_reference(x)[0])


def test_reformer_one_round_is_softmax_within_buckets():
    """One hash round, 2 buckets, a window covering the sequence: LSH attention is softmax over the
    same-bucket keys (normalised keys, shared QK), with a token's own score set to -5e4."""
    layer = make("reformer", Pattern.NONCAUSAL_SELF, num_hashes=1, num_buckets=2)
    x = torch.randn(B, 20, DIM, dtype=torch.double)
    qk = layer.split_heads(layer.q_proj(x))
    v = layer.split_heads(layer.v_proj(x))
    s = qk @ (qk / qk.norm(dim=-1, keepdim=True)).transpose(-1, -2) / DH**0.5
    s = s.masked_fill(torch.eye(20, dtype=torch.bool), -5e4)
    rot = torch.randn(1, DH, 1, generator=torch.Generator().manual_seed(int(layer.hash_seed))).double()
    bucket = (qk @ rot[0]).squeeze(-1) < 0  # argmax over [xR, -xR]
    same = bucket[..., :, None] == bucket[..., None, :]
    want = torch.softmax(s.masked_fill(~same, float("-inf")), -1) @ v
    close(layer(x), layer.out_proj(layer.merge_heads(want)))


def test_reformer_causal_reads_only_earlier_same_bucket_tokens():
    layer = make("reformer", Pattern.CAUSAL_SELF, num_hashes=1, num_buckets=2, bucket_size=64)
    x = torch.randn(B, 30, DIM, dtype=torch.double)
    qk = layer.split_heads(layer.q_proj(x))
    v = layer.split_heads(layer.v_proj(x))
    s = qk @ (qk / qk.norm(dim=-1, keepdim=True)).transpose(-1, -2) / DH**0.5
    s = s.masked_fill(torch.eye(30, dtype=torch.bool), -5e4)
    rot = torch.randn(1, DH, 1, generator=torch.Generator().manual_seed(int(layer.hash_seed))).double()
    bucket = (qk @ rot[0]).squeeze(-1) < 0
    allowed = (bucket[..., :, None] == bucket[..., None, :]) & torch.ones(30, 30, dtype=torch.bool).tril()
    want = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v
    close(layer(x), layer.out_proj(layer.merge_heads(want)))


# ---------------------------------------------------------------------------------------------
# determinism of the random methods in eval mode


@pytest.mark.parametrize("name", ["performer", "probsparse", "reformer", "lara"])
def test_random_methods_are_deterministic_in_eval(name):
    x = torch.randn(B, 30, DIM, dtype=torch.double)
    a = make(name, Pattern.NONCAUSAL_SELF, seed=3)
    b = make(name, Pattern.NONCAUSAL_SELF, seed=3)
    torch.manual_seed(123)
    ya = a(x)
    torch.manual_seed(456)  # the global RNG state must not matter in eval
    close(ya, b(x), tol=0)
    close(ya, a(x), tol=0)


def test_costs_scale_and_state_sizes():
    for name, pattern in [("performer", "causal_self"), ("cosformer", "causal_self"), ("abc", "causal_self"),
                          ("s4d", "causal_self")]:
        layer = build_attention(name, dim=DIM, num_heads=H, pattern=pattern)
        assert layer.state_size(100) == layer.state_size(1000) > 0
