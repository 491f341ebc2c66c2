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


# ---------------------------------------------------------------------------------------------
# identities against softmax


@pytest.mark.parametrize("pattern", [Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF], ids=lambda p: p.value)
def test_local_with_full_window_is_softmax(pattern):
    q, k, v = qkv(37)
    mask = padding(37)
    layer = make("local", pattern, window=40)
    close(layer.attend(q, k, v, mask), dense_softmax(q, k, v, mask, causal=pattern.is_causal))


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


# ---------------------------------------------------------------------------------------------
# causal forms against their own quadratic / step-by-step references


def test_performer_causal_chunks_equal_quadratic_favor():
    """Several chunks (the contract test's short inputs fit in one): the running-max stabiliser, carried as a
    per-position decay across chunks, gives the unstabilised quadratic FAVOR+ estimate (the layer's reference)."""
    q, k, v = qkv(70)
    layer = make("performer", Pattern.CAUSAL_SELF, num_features=16, chunk_size=16)
    mask = padding(70, pad=9)
    close(layer.attend(q, k, v, None), layer.reference_attend(q, k, v, None))
    close(layer.attend(q, k, v, mask)[1], layer.reference_attend(q, k, v, mask)[1])
    close(layer.attend(q, k, v, mask)[0, :, :61], layer.reference_attend(q, k, v, mask)[0, :, :61])


def test_performer_causal_stabiliser_does_not_look_ahead():
    q, k, v = qkv(40, scale=3.0)  # large logits: the stabiliser matters
    layer = make("performer", Pattern.CAUSAL_SELF, num_features=16, chunk_size=8)
    full = layer.attend(q, k, v, None)
    k2 = k.clone()
    k2[:, :, 25:] *= 4  # a much larger future key would move a global max
    close(layer.attend(q, k2, v, None)[:, :, :25], full[:, :, :25], tol=1e-10)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_abc_causal_equals_recurrence(chunk):
    """Chunk sizes below, across and above the length, with padding: the layer's step-by-step reference."""
    q, k, v = qkv(45)
    layer = make("abc", Pattern.CAUSAL_SELF, num_slots=4, chunk_size=chunk)
    mask = padding(45, pad=6)
    close(layer.attend(q, k, v, None), layer.reference_attend(q, k, v, None))
    close(layer.attend(q, k, v, mask)[:, :, :39], layer.reference_attend(q, k, v, mask)[:, :, :39])


@pytest.mark.parametrize("pattern", [Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF], ids=lambda p: p.value)
@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_s4d_chunks_equal_recurrence(pattern, chunk):
    """Chunks below, across and above the length (the carried state between chunks, the backward kernel's
    lag), values and gradients: the chunked matrix products equal the step-by-step recurrence."""
    layer = make("s4d", pattern, d_state=8, kernel_block=chunk)
    u = torch.randn(B, DIM, 45, dtype=torch.double)
    got, want = layer.mix(u), layer.mix_recurrent(u)
    close(got, want)
    w = torch.randn_like(got)
    grads = [torch.autograd.grad((y * w).sum(), list(layer.parameters())[:4]) for y in (got, want)]
    for a, b in zip(*grads):
        close(a, b)


def test_abc_causal_keeps_prefix_memory():
    """CAB's causal ABC uses only token t's own key/value at step t; ours reads the whole prefix."""
    q, k, v = qkv(20)
    layer = make("abc", Pattern.CAUSAL_SELF, num_slots=4)
    out = layer.attend(q, k, v, None)
    v2 = v.clone()
    v2[:, :, 3] += 5.0  # an early value must still matter at the last position
    assert not torch.allclose(layer.attend(q, k, v2, None)[:, :, -1], out[:, :, -1])


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
