"""The shared base of attention layers: projections, head split, pattern checks, cost hooks.

Most mechanisms subclass `MultiHeadAttention` and write only `attend`, the per-head core:

    q: (B, H, Lq, Dh)   k, v: (B, H, Lk, Dh)   key_padding_mask: (B, Lk) bool, True = padding
    -> (B, H, Lq, Dh)

Mechanisms without queries and keys (state-space mixers, convolutions) subclass `AttentionLayer`
and write `forward` themselves. Either way the layer maps x: (B, Lq, dim) [and context: (B, Lk, dim)]
to (B, Lq, dim) and states its cost:

    flops(batch, len_q, len_k) -> forward FLOPs of the whole layer (2 FLOPs per multiply-add)
    state_size(seq_len)        -> numbers carried by its recurrent form per example, or None

A mechanism may also declare its *reference*: the same function computed the plain way (the
quadratic masked form, or the step-by-step recurrence) that its fast form must equal, by writing
`reference_attend` (same signature as `attend`) or, for a whole layer, `reference_forward` (same
signature as `forward`). The contract test compares every declared reference with the layer in
float64, so a new mechanism with a reference is checked without new test code.

Decode (recurrent) form, for generation token by token (causal self only; docs/decode.md):

    prefill(x)            x: (B, L, dim) prompt -> (out (B, L, dim), state): out is the parallel form's
                          output (equal to self(x)), state what the layer carries after L tokens
    step(x_t, state)      x_t: (B, 1, dim), the next token -> (out_t (B, 1, dim), the state after it);
                          may update `state` in place and returns it
    state.numbers()       numbers carried per example, equal to state_size(state.position)
    declares_decode()     True when the class writes prefill and step
    decode_unsupported    a class attribute: one line saying why a causal mechanism has no decode form

The state is a `DecodeState`: named tensors with the batch first (a recurrent state S, running sums, a
convolution's last inputs) or `cab.ops.TokenCache`s (the keys and values kept: all of them for exact
attention, the last w for a window), plus `position`, the tokens read so far. Prefill then steps equals
the parallel forward over the whole sequence (tests/test_decode.py checks every mechanism that declares
a decode form, in float64); a mechanism that cannot have one sets `decode_unsupported` instead, and
`cab list` shows either. Exact attention's `MultiHeadAttention.kv_cache_prefill` / `kv_cache_step`
are the KV-cache form for mechanisms that only need a different read of the cached keys.
"""

from __future__ import annotations

import torch
from torch import nn

from cab.ops.cache import TokenCache
from cab.patterns import Pattern


class DecodeState(dict):
    """What a layer carries from one generated token to the next (see the module docstring): named parts,
    each a tensor with the batch first or a `cab.ops.TokenCache`, and `position`, the tokens read so far."""

    def __init__(self, position: int, **parts):
        super().__init__(parts)
        self.position = int(position)

    def numbers(self) -> int:
        """Numbers carried per example (a complex number counts 2): what `state_size(position)` states."""
        total = 0
        for part in self.values():
            if isinstance(part, torch.Tensor):
                total += part[0].numel() * (2 if part.is_complex() else 1)
            else:
                total += part.numbers()
        return total

    def nbytes(self) -> int:
        """Bytes of the carried numbers, whole batch (a cache's spare room not included)."""
        return sum(p.numel() * p.element_size() if isinstance(p, torch.Tensor) else p.nbytes() for p in self.values())

    def allocated_bytes(self) -> int:
        """Bytes allocated for the state, whole batch, caches' spare room included."""
        return sum(p.numel() * p.element_size() if isinstance(p, torch.Tensor) else p.allocated_bytes()
                   for p in self.values())

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}" for k, v in self.items())
        return f"DecodeState(position={self.position}, {parts})"


class AttentionLayer(nn.Module):
    """Anything registered with `@register_attention` (a whole layer, usable in any backbone)."""

    attention_name: str = "?"  # set by @register_attention

    def __init__(self, dim: int, num_heads: int, pattern: Pattern | str):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.pattern = Pattern.parse(pattern)

    @property
    def causal(self) -> bool:
        """True where positions must be masked: causal *self*. Causal cross is a property of the
        mechanism (queries never interact), not a mask."""
        return self.pattern is Pattern.CAUSAL_SELF

    def check_inputs(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Return the key/value source sequence, after checking `context` matches the pattern."""
        if self.pattern.is_cross:
            if context is None:
                raise ValueError(f"pattern {self.pattern} needs a context sequence (B, Lk, dim)")
            return context
        if context is not None:
            raise ValueError(f"pattern {self.pattern} is self attention; context must be None")
        return x

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        raise NotImplementedError(f"{type(self).__name__} must state its forward FLOPs")

    def state_size(self, seq_len: int) -> int | None:
        """Numbers per example carried across positions by the recurrent form (None: no such form)."""
        return None

    def reference_forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The layer computed by its plain reference form (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} declares no reference form")

    @classmethod
    def declares_reference(cls) -> bool:
        """True when the class writes a reference form (`reference_forward`, or `reference_attend`)."""
        return cls.reference_forward is not AttentionLayer.reference_forward

    # -- decode (recurrent) form -------------------------------------------------------------------
    decode_unsupported: str | None = None  # why a causal mechanism has no decode form (one line)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
        """Read a prompt by the parallel form: x (B, L, dim) -> (out (B, L, dim) = self(x), the state after L)."""
        raise NotImplementedError(self._no_decode())

    def step(self, x_t: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """Read the next token x_t (B, 1, dim) -> (out_t (B, 1, dim), the state after it; `state` itself, updated)."""
        raise NotImplementedError(self._no_decode())

    @classmethod
    def declares_decode(cls) -> bool:
        """True when the class writes a decode form (`prefill` and `step`)."""
        return cls.prefill is not AttentionLayer.prefill and cls.step is not AttentionLayer.step

    def _no_decode(self) -> str:
        why = type(self).decode_unsupported or "it declares none"
        return f"attention {self.attention_name!r} has no decode form: {why}"

    def check_decode(self, x: torch.Tensor) -> None:
        """Decoding is generation: causal self attention only, a prompt (B, L, dim) of at least one token."""
        if self.pattern is not Pattern.CAUSAL_SELF:
            raise ValueError(f"attention {self.attention_name!r}: decoding needs pattern causal_self, "
                             f"not {self.pattern.value}")
        if x.dim() != 3 or x.shape[-1] != self.dim or x.shape[1] < 1:
            raise ValueError(f"a prompt must be (B, L >= 1, {self.dim}), got {tuple(x.shape)}")

    def skipped_masked_flops(self, batch: int, len_q: int, len_k: int) -> int:
        """FLOPs of the dense masked form that this layer's algorithm skips (0 by default).

        Fused exact kernels skip the blocks above the causal diagonal, so their stated FLOPs count
        only the unmasked half; the FLOP counters run the dense math form and count the masked half
        too. The FLOP test adds this back before comparing."""
        return 0

    def runtime_info(self) -> dict:
        """Facts about how this layer ran (e.g. which kernel), copied into the result record."""
        return {}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, pattern={self.pattern.value}"


class MultiHeadAttention(AttentionLayer):
    """Q/K/V/output projections and the head split; subclasses implement `attend`."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern | str, bias: bool = True):
        super().__init__(dim, num_heads, pattern)
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, length, _ = t.shape  # (B, L, dim) -> (B, H, L, Dh)
        return t.view(b, length, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, _, length, _ = t.shape  # (B, H, L, Dh) -> (B, L, dim)
        return t.transpose(1, 2).reshape(b, length, self.dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.project_and_attend(self.attend, x, context, key_padding_mask)

    def project_and_attend(self, core, x, context, key_padding_mask) -> torch.Tensor:
        """Projections around a per-head core (`attend`, or `reference_attend` for the reference)."""
        source = self.check_inputs(x, context)
        q = self.split_heads(self.q_proj(x))  # (B, H, Lq, Dh)
        k = self.split_heads(self.k_proj(source))  # (B, H, Lk, Dh)
        v = self.split_heads(self.v_proj(source))  # (B, H, Lk, Dh)
        out = core(q, k, v, key_padding_mask)  # (B, H, Lq, Dh)
        return self.out_proj(self.merge_heads(out))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def reference_attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The per-head core computed by its plain reference form (same shapes as `attend`)."""
        raise NotImplementedError(f"{type(self).__name__} declares no reference form")

    def reference_forward(self, x, context=None, key_padding_mask=None):
        return self.project_and_attend(self.reference_attend, x, context, key_padding_mask)

    @classmethod
    def declares_reference(cls) -> bool:
        return (cls.reference_attend is not MultiHeadAttention.reference_attend
                or cls.reference_forward is not MultiHeadAttention.reference_forward)

    # -- decode helpers ---------------------------------------------------------------------------
    def self_projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of self attention over x (B, L, dim): (B, H, L, Dh) each."""
        return self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def kv_cache_prefill(self, x: torch.Tensor, window: int | None = None) -> tuple[torch.Tensor, DecodeState]:
        """Prefill of a KV-cache decode form: `attend` over the prompt, and its keys and values cached (all of
        them, or the last `window`: a token that reads keys i-w..i needs only w past ones)."""
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        out = self.out_proj(self.merge_heads(self.attend(q, k, v, None)))
        return out, DecodeState(x.shape[1], k=TokenCache(k, window), v=TokenCache(v, window))

    def kv_cache_step(self, x_t: torch.Tensor, state: DecodeState, read) -> tuple[torch.Tensor, DecodeState]:
        """Step of a KV-cache decode form: the new key and value join the cache, then
        read(q (B, H, 1, Dh), keys (B, H, n, Dh), values (B, H, n, Dh)) -> (B, H, 1, Dh), over the n cached
        positions and the new one. Cost O(n·dim) per token: the cache is read once."""
        q, k, v = self.self_projections(x_t)
        keys, values = state["k"].extend(k), state["v"].extend(v)
        state.position += 1
        return self.out_proj(self.merge_heads(read(q, keys, values))), state

    # -- cost -----------------------------------------------------------------------------------
    def projection_flops(self, batch: int, len_q: int, len_k: int) -> int:
        """Q and output projections on Lq tokens, K and V on Lk tokens: 2·dim² FLOPs per token each."""
        return 2 * batch * self.dim * self.dim * (2 * len_q + 2 * len_k)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        raise NotImplementedError(f"{type(self).__name__} must state the FLOPs of its attention core")

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        return self.projection_flops(batch, len_q, len_k) + self.core_flops(batch, len_q, len_k)


def kv_cache_size(dim: int, length: int) -> int:
    """State of exact attention's recurrent (decoding) form: the cached keys and values, 2·dim·L per
    example per layer (Zoology counts MHA's state the same way)."""
    return 2 * dim * length


def exact_attention_flops(batch: int, len_q: int, len_k: int, dim: int, causal: bool) -> int:
    """QKᵀ and P·V: 2·Dh FLOPs each per (query, key) pair per head -> 4·dim per pair, per example.

    Noncausal and cross: every pair, Lq·Lk. Causal self: only the pairs j <= i, L(L+1)/2, the way
    FlashAttention's papers count causal attention (about half the work: fused kernels skip the
    blocks above the diagonal). A layer that computes every score and masks afterwards (`vanilla`)
    passes causal=False: its algorithm does the full work."""
    pairs = len_q * (len_q + 1) // 2 if causal else len_q * len_k
    return 4 * batch * pairs * dim
