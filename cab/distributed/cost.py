"""What each strategy sends, by formula: bytes per process per call, forward and backward.

The formulas count what cab/distributed/comm.py counts (the bytes each process hands to the
transport under the bandwidth-optimal algorithm of each collective), written from the algorithm
rather than from the code, so that tests/test_distributed.py can hold the two against each other
and `cab bench` can record both. With e bytes per element, B batch, P ranks, d = dim, Lq and Lk the
whole sequences (Lk = Lq for self patterns), and m = 1 byte per position of padding mask (sent only
when the layer is given a key_padding_mask):

ring       forward   (P-1)·(2·B·(Lk/P)·d·e + m·B·Lk/P)          K, V (and the mask) round the ring
           backward  (P-1)·(2·B·(Lk/P)·d·e + m·B·Lk/P) + P·2·B·(Lk/P)·d·e   once more, plus dK, dV home
ulysses    forward   (P-1)/P · B·(2·Lq/P + 2·Lk/P)·d·e + (P-1)·m·B·Lk/P     q, k, v, o; the mask gathered
           backward  (P-1)/P · B·(2·Lq/P + 2·Lk/P)·d·e                        their gradients
lasp       |S| = B·H·F·Dv' elements per rank (F features, Dv' = Dh + 1 when normalised)
  noncausal forward  2·(P-1)/P·|S|·e   (all-reduce; Performer +2·(P-1)/P·B·H·e for its key maximum)
           backward  2·(P-1)/P·|S|·e
  causal   forward   (P-1)·(|S| + |D|)·e   (all-gather of states and log decays, |D| = H per head, B·H
                     per position; Performer + (P-1)·B·H·e for the slices' key maxima)
           backward  (P-1)·|S|·e  (+ (P-1)·|D|·e if the decay carries a gradient)
  Based's window adds a halo: w keys and values from the rank before (noncausal: and after),
           forward 2·B·w·d·e + m·B·w per side, backward 2·B·w·d·e per side.

Per-rank memory (forward, leading terms): ring about 4·B·H·(L/P)·C·e (one block's scores, masked
scores and probabilities, C = query_chunk or L/P) + O(B·(L/P)·d·e); ulysses the core's own memory on H/P heads at
full length; lasp O(B·H·(L/P)·(F + Dh)·e). So under a fixed memory cap, ring (whole blocks) and
vanilla-core ulysses reach P× and √P× the length of vanilla in one process; softmax-core ulysses
and lasp, whose memory is linear in L/P, reach about P× their own one-process length.
"""

from __future__ import annotations

from cab.patterns import Pattern


def _lasp_state(name: str, layer) -> tuple[int, int, str]:
    """(F, Dv', decay kind) of a mechanism's linear form: features, state columns, "none"/"head"/"position"."""
    d = layer.head_dim
    if name == "linear":
        return d, d + 1, "none"
    if name == "lightning":
        return d, d, "head" if layer.use_decay else "none"
    if name == "performer":
        return layer.num_features, d + 1, "position" if layer.causal else "none"
    if name == "based":
        from cab.ops import taylor_feature_size

        return taylor_feature_size(layer.feature_dim), d + 1, "none"
    raise ValueError(f"no state formula for {name!r}")


def bytes_per_process(strategy: str, name: str, layer, batch: int, len_q: int, len_k: int, world_size: int,
                      element_bytes: int, padded: bool, backward: bool = False) -> int:
    """Bytes one process sends for one call of the distributed layer (forward, or the backward alone)."""
    p, b, d, h, e = world_size, batch, layer.dim, layer.num_heads, element_bytes
    if p == 1:
        return 0
    m = 1 if padded else 0
    lq, lk = len_q // p, len_k // p  # per rank
    if strategy == "ring":
        kv = 2 * b * lk * d * e
        fwd = (p - 1) * (kv + m * b * lk)
        return fwd + p * kv if backward else fwd
    if strategy == "ulysses":
        moved = (p - 1) * b * (2 * lq + 2 * lk) * d * e / p
        return round(moved if backward else moved + (p - 1) * m * b * lk)
    if strategy == "lasp":
        f, dv, decay = _lasp_state(name, layer)
        state = b * h * f * dv
        causal = layer.causal
        if not causal:
            total = 2 * (p - 1) * state * e / p
            if name == "performer" and not backward:
                total += 2 * (p - 1) * b * h * e / p
        else:
            decay_elems = {"none": 0, "head": h, "position": b * h}[decay]
            total = (p - 1) * state * e + (0 if backward else (p - 1) * decay_elems * e)
            if name == "performer" and not backward:
                total += (p - 1) * b * h * e
        if name == "based" and layer.window > 0 and not layer.pattern.is_cross:
            sides = 1 if layer.causal else 2
            # k and v of w positions; the halo's mask (forward only) travels even without padding
            per_side = 2 * b * layer.window * d * e + (0 if backward else b * layer.window)
            total += sides * per_side
        return round(total)
    raise ValueError(f"unknown strategy {strategy!r}")


def pattern_lengths(pattern: Pattern | str, length: int) -> tuple[int, int]:
    """(Lq, Lk) of a bench point: Lk = Lq = length (cross patterns use a source of the same length)."""
    Pattern.parse(pattern)
    return length, length
