"""Token caches of the decode (recurrent) forms: the keys and values a generating layer keeps.

    TokenCache(t, limit)      t: (B, H, n, D), the prompt's per-token tensors (keys, values, inputs)
      .extend(t_new)          t_new: (B, H, m, D) -> (B, H, kept + m, D), a view, in position order:
                              what the new tokens may read; afterwards the last `limit` are kept
      .length                 positions kept (all of them, or the last `limit`)
      .numbers()              H·length·D: the numbers carried per example (what `state_size` counts)

limit None keeps every position: softmax's KV cache, 2·dim·L numbers per example and layer, so a
generated token costs O(L) (reading the cache). limit w keeps the last w: a sliding window's cache,
2·dim·w, O(w) per token whatever the context. A cache of w *past* positions is what a layer whose query
sees keys i-w..i carries between tokens (the new token adds its own key before reading).

Storage: one buffer with spare room, positions [start, end) kept in order. A full buffer doubles
(growing cache) or moves its kept tail to the front (sliding cache: a buffer of 2·(w+1) positions moves
w of them once every w+2 tokens), so copying is amortised O(H·D) per token and a step never copies the
whole cache. `nbytes()` counts the kept positions, `allocated_bytes()` the buffer with its spare room.
"""

from __future__ import annotations

import torch

GROWING_SPARE = 256  # positions of room a growing cache gets beyond its prompt (then it doubles when full)


class TokenCache:
    """The last `limit` (None: all) positions of a (B, H, n, D) per-token tensor, appended to as tokens
    are generated (see the module docstring)."""

    def __init__(self, t: torch.Tensor, limit: int | None = None):
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be None or >= 0, got {limit}")
        b, h, n, d = t.shape
        self.limit = limit
        keep = n if limit is None else min(n, limit)
        capacity = keep + GROWING_SPARE if limit is None else 2 * (limit + 1)
        self.buffer = t.new_empty(b, h, max(capacity, keep), d)  # (B, H, capacity, D)
        self.start, self.end = 0, keep
        if keep:
            self.buffer[:, :, :keep] = t[:, :, n - keep :]

    @property
    def length(self) -> int:
        return self.end - self.start

    def view(self) -> torch.Tensor:
        """The kept positions, (B, H, length, D), oldest first (a view of the buffer)."""
        return self.buffer[:, :, self.start : self.end]

    def extend(self, t: torch.Tensor) -> torch.Tensor:
        """Append t (B, H, m, D) -> the kept positions followed by t, (B, H, kept + m, D), a view valid until
        the next call. Then only the last `limit` positions stay kept."""
        m = t.shape[2]
        if self.end + m > self.buffer.shape[2]:
            self._make_room(m)
        self.buffer[:, :, self.end : self.end + m] = t
        self.end += m
        readable = self.buffer[:, :, self.start : self.end]
        if self.limit is not None:
            self.start = max(self.start, self.end - self.limit)
        return readable

    def _make_room(self, m: int) -> None:
        kept = self.length
        capacity = self.buffer.shape[2]
        if self.limit is None or kept + m > capacity:  # grow: double (or to what is needed)
            new = self.buffer.new_empty(*self.buffer.shape[:2], max(2 * capacity, kept + m), self.buffer.shape[3])
            new[:, :, :kept] = self.view()
            self.buffer = new
        elif kept:  # slide: the kept tail to the front (a copy when the two ranges overlap)
            tail = self.view()
            self.buffer[:, :, :kept] = tail.clone() if self.start < kept else tail
        self.start, self.end = 0, kept

    def numbers(self) -> int:
        """Numbers carried per example: H·length·D."""
        b, h, _, d = self.buffer.shape
        return h * self.length * d

    def nbytes(self) -> int:
        """Bytes of the kept positions, whole batch."""
        return self.buffer.shape[0] * self.numbers() * self.buffer.element_size()

    def allocated_bytes(self) -> int:
        """Bytes of the buffer, spare room included."""
        return self.buffer.numel() * self.buffer.element_size()
