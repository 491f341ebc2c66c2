"""MQAR across two sequences: associative recall that must go through cross attention (ours).

No published benchmark measures recall through cross attention, so this task moves Zoology's MQAR
(Arora et al., ICLR 2024; see `tasks/mqar.py`) onto an encoder-decoder: the key-value block
`k1 v1 k2 v2 ...` is the *source* sequence (length Lk = 2·kv) and the query region that follows it
in MQAR is the *target* (length Lq = L - 2·kv). Each key reappears once in the target, at an even
offset drawn from the same power law (a = 0.01); the decoder must emit the key's value there
(labels are -100 elsewhere). The values exist only in the source, so every correct answer is read
through the cross attention: the pattern under test.

Everything about the data is MQAR's generator, cut in two, so the guarantees carry over: keys and
values distinct within an example, power-law query placement, labels only at queries, train and
test drawn from disjoint seed ranges.

Model (pre-norm, Zoology-sized, no MLP by default):
    encoder: source embedding (+ learned positions), `encoder_layers` blocks of noncausal self
             attention (softmax: the task exercises only the cross patterns);
    decoder: target embedding (+ learned positions), `decoder_layers` CrossBlocks: self attention
             over the target, then cross attention into the encoded source (the pattern under test);
    head:    final LayerNorm and an LM head; source, target and head share one token table.
For `causal_cross` the decoder's self attention is `causal_self` (softmax), so output i depends on
target positions <= i only: the queries are read in order, as a streaming decoder reads them.
For `noncausal_cross` it is `noncausal_self` (softmax).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cab import Pattern, register_task
from cab.backbone import Block, CrossBlock, TokenEmbedding, init_weights

from .mqar import MQARTask, Segment


def split_source_target(inputs: torch.Tensor, labels: torch.Tensor, num_kv_pairs: int):
    """MQAR (N, L) -> source (N, 2kv) = the key-value block, target (N, L-2kv) and its labels."""
    context = 2 * num_kv_pairs
    return inputs[:, :context].contiguous(), inputs[:, context:].contiguous(), labels[:, context:].contiguous()


class MQARCrossModel(nn.Module):
    def __init__(self, attention, pattern: Pattern, vocab_size: int, d_model: int, num_heads: int,
                 encoder_layers: int, decoder_layers: int, max_source_len: int, max_target_len: int,
                 mlp_ratio: int = 0, embed_dropout: float = 0.1, short_conv: int = 0):
        super().__init__()
        self_role = Pattern.CAUSAL_SELF if pattern is Pattern.CAUSAL_CROSS else Pattern.NONCAUSAL_SELF
        self.source_embed = TokenEmbedding(vocab_size, d_model, max_source_len, embed_dropout)
        self.encoder = nn.ModuleList([Block(d_model, attention(Pattern.NONCAUSAL_SELF, d_model, num_heads), mlp_ratio,
                                            short_conv=short_conv) for _ in range(encoder_layers)])
        self.encoder_norm = nn.LayerNorm(d_model)
        self.target_embed = TokenEmbedding(vocab_size, d_model, max_target_len, embed_dropout)
        self.decoder = nn.ModuleList([
            CrossBlock(d_model, attention(self_role, d_model, num_heads), attention(pattern, d_model, num_heads), mlp_ratio)
            for _ in range(decoder_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        init_weights(self)
        # One vocabulary, one table (as MQAR's single sequence has, and T5 shares between encoder and
        # decoder): a key reads the same in the source and the target, so recall needs no learnt
        # alignment of two tables. The LM head is tied to it, as in Zoology.
        self.target_embed.tokens.weight = self.source_embed.tokens.weight
        self.head.weight = self.source_embed.tokens.weight

    def forward(self, source: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        memory = self.source_embed(source)  # (B, Lk, d)
        for block in self.encoder:
            memory = block(memory)
        memory = self.encoder_norm(memory)
        x = self.target_embed(target)  # (B, Lq, d)
        for block in self.decoder:
            x = block(x, memory)
        x = self.norm(x)
        if labels is not None:  # logits only at the queries: the loss ignores the rest
            x = x[labels != -100]  # (Q, d)
        return self.head(x)  # (Q, V) or (B, Lq, V)


@register_task("mqar_cross", patterns=[Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS])
class MQARCrossTask(MQARTask):
    """MQAR across two sequences: the key-value block is the source, the queries are the target."""

    param_constraints = {"num_layers": None}  # encoder_layers and decoder_layers instead

    def __init__(self, pattern: Pattern, seed: int, encoder_layers: int = 1, decoder_layers: int = 1, **mqar: Any):
        if "num_layers" in mqar:
            raise ValueError("mqar_cross: set encoder_layers and decoder_layers, not num_layers")
        self.encoder_layers, self.decoder_layers = encoder_layers, decoder_layers
        super().__init__(pattern, seed, **mqar)  # same generator, segments, batching and metric as mqar
        segments = self.train_segments + self.test_segments
        self.max_source_len = max(2 * s.num_kv_pairs for s in segments)
        self.max_target_len = max(s.seq_len - 2 * s.num_kv_pairs for s in segments)

    def _generate(self, segment: Segment, seed: int):
        inputs, labels = super()._generate(segment, seed)
        return split_source_target(inputs, labels, segment.num_kv_pairs)  # (source, target, labels)

    def build_model(self, attention) -> nn.Module:
        return MQARCrossModel(attention, self.pattern, self.vocab_size, self.d_model, self.num_heads,
                              self.encoder_layers, self.decoder_layers, self.max_source_len, self.max_target_len,
                              self.mlp_ratio, self.embed_dropout, self.short_conv)

    def attention_lengths(self):
        return {self.pattern: (self.max_target_len, self.max_source_len)}
