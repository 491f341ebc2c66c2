"""cab.ops: the attention kernels of the zoo, each written once, with a plain reference form beside it.

Depends on torch (and nothing of the harness). Shapes: (B, H, L, D) per head; masks follow masking.py:
key_padding_mask (B, Lk) True = padding, keep (B, L) True = real, allowed (.., Lq, Lk) True = may attend.
FLOPs functions count matrix products only, 2 per multiply-add, as torch's FlopCounterMode does.

op (reference form, if any)                     module        used by (imports in attentions/)
----------------------------------------------  ------------  ------------------------------------------------
keep_mask, allowed_mask, causal_mask            masking       17 mechanisms with padding; 9 with dense masks
sdpa_mask                                       masking       softmax, flash, moh, ccam, glca, perceiver (SDPA)
zero_padding                                    masking       lightning, channel, flowformer, abc, agent,
                                                              linformer, nystromformer
masked_softmax (finite fill, empty rows 0)      masking       vanilla, abc, agent, aggregated, ccam, flowformer,
                                                              gaussian, glca, landmark, longshort, lookup,
                                                              nystromformer, perceiver, probsparse
masked_softmax_lse, merge_softmax_parts         masking       longshort (long + short parts), reformer (rounds),
  (one softmax over the union of the keys)                    lara
softmax_attention (+_flops)                     masking       vanilla, moh, routing, probsparse, lookup, agent,
  (masked_softmax(q kᵀ) v, written out)                       linformer, abc; the references of softmax, flash,
                                                              local, sliding_window, halo, lsda, based
window_attention (+_flops)                      windows       local, sliding_window, based (window part),
  (softmax_attention with window_allowed)                     longshort (short part), reformer, halo, lsda
unfold_windows, window_valid                    windows       aggregated (a window per position)
causal_recurrence (+_flops)                     recurrence    lightning (per-head decay), mamba (per channel,
  (compiled on CPU for mamba's case: native.py)               compiled: csrc/channel_scan.cpp);
  (causal_recurrence_reference: the step loop)                linear, based, cosformer, performer (per position),
                                                              flowformer through linear_attention
selective_scan (+_flops): Mamba-1's scan with    selective     mamba (compiled on CPU: csrc/channel_scan.cpp)
  W_Δ, softplus, skip, padding, either direction
  (selective_scan_reference: the step loop)
short_conv: depthwise conv (+ SiLU), causal or   selective     mamba (compiled on CPU)
  looking forward (short_conv_reference)
log_decay_from_cumulative                       recurrence    favor_key_features (Performer's running stabiliser)
linear_attention (+_flops)                      linear        linear, based, cosformer, performer; lightning and
  (linear_attention_reference: quadratic form)                flowformer with normalize=False
segment_weights, segment_means, segment_ids,    pooling       nystromformer, lara, agent, aggregated, lookup
  segment_bounds (segment_means_reference)
causal_segment_means (…_reference)              pooling       aggregated (causal pooled tokens, in chunks of
  rank_prefix, causal_segment_means_of                        queries: the prefix once, then per chunk)
causal_prefix_mean                              pooling       gaussian (causal running statistics)
elu / relu / silu_feature_map                   feature_maps  linear / the docs' example / lightning
taylor_feature_map, taylor_feature_size         feature_maps  based (identity 1 + s + s²/2 tested)
cosformer_feature_map                           feature_maps  cosformer (identity cos(π(i-j)/2M) tested)
orthogonal_gaussian, favor_log_features,        feature_maps  performer (the stabilisers cancel: tested)
  favor_query_features, favor_key_features
ceil_div, pad_to_multiple                       shapes        landmark, longshort, lsda, routing (blocks)

decode (recurrent) forms, one generated token at a time (docs/decode.md; tested in tests/test_decode.py):
causal_recurrence_step                          recurrence    lightning, mamba; through linear_attention_step:
  (one position of causal_recurrence)                         linear, based, cosformer, performer
linear_attention_step                           linear        linear, based, cosformer, performer
TokenCache (per-token tensors kept: all, or     cache         softmax, vanilla, flash, moh, landmark, routing
  the last w; amortised O(1) copies a token)                  (KV caches); local, sliding_window, based, halo,
                                                              lsda, longshort, aggregated (windows); longshort,
                                                              landmark, routing, aggregated (per-chunk rows, sums)
"""

from .feature_maps import (
    cosformer_feature_map,
    elu_feature_map,
    favor_key_features,
    favor_log_features,
    favor_query_features,
    orthogonal_gaussian,
    relu_feature_map,
    silu_feature_map,
    taylor_feature_map,
    taylor_feature_size,
)
from .cache import TokenCache
from .linear import linear_attention, linear_attention_flops, linear_attention_reference, linear_attention_step
from .masking import (
    allowed_mask,
    causal_mask,
    keep_mask,
    masked_softmax,
    masked_softmax_lse,
    merge_softmax_parts,
    sdpa_mask,
    softmax_attention,
    softmax_attention_flops,
    zero_padding,
)
from .pooling import (
    RankPrefix,
    causal_prefix_mean,
    causal_segment_means,
    causal_segment_means_of,
    causal_segment_means_reference,
    rank_prefix,
    segment_bounds,
    segment_ids,
    segment_means,
    segment_means_reference,
    segment_weights,
)
from .recurrence import (
    DECAY_KINDS,
    causal_recurrence,
    causal_recurrence_flops,
    causal_recurrence_reference,
    causal_recurrence_step,
    decay_kind,
    log_decay_from_cumulative,
)
from .selective import (
    selective_scan,
    selective_scan_flops,
    selective_scan_reference,
    short_conv,
    short_conv_reference,
)
from .shapes import ceil_div, pad_to_multiple
from .windows import (
    unfold_windows,
    window_allowed,
    window_attention,
    window_attention_flops,
    window_block_size,
    window_valid,
)

__all__ = [
    "DECAY_KINDS", "RankPrefix", "TokenCache", "allowed_mask", "causal_mask", "causal_prefix_mean",
    "causal_recurrence", "causal_recurrence_flops", "causal_recurrence_reference", "causal_recurrence_step",
    "causal_segment_means", "causal_segment_means_of", "causal_segment_means_reference", "ceil_div",
    "cosformer_feature_map", "decay_kind", "elu_feature_map", "favor_key_features", "favor_log_features",
    "favor_query_features", "keep_mask", "linear_attention", "linear_attention_flops",
    "linear_attention_reference", "linear_attention_step", "log_decay_from_cumulative", "masked_softmax",
    "masked_softmax_lse", "merge_softmax_parts", "orthogonal_gaussian", "pad_to_multiple", "rank_prefix",
    "relu_feature_map", "sdpa_mask", "segment_bounds", "segment_ids", "segment_means", "segment_means_reference",
    "segment_weights", "selective_scan", "selective_scan_flops", "selective_scan_reference", "short_conv",
    "short_conv_reference", "silu_feature_map", "softmax_attention", "softmax_attention_flops",
    "taylor_feature_map", "taylor_feature_size", "unfold_windows", "window_allowed", "window_attention",
    "window_attention_flops", "window_block_size", "window_valid", "zero_padding",
]
