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
    head:    final LayerNorm and an LM head tied to the target embedding.
For `causal_cross` the decoder's self attention is `causal_self` (softmax), so output i depends on
target positions <= i only: the queries are read in order, as a streaming decoder reads them.
For `noncausal_cross` it is `noncausal_self` (softmax).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import Block, CrossBlock, TokenEmbedding, init_weights
from cab.task import MetricInfo, batch_indices

from .mqar import TEST_SEED_OFFSET, Segment, multiquery_ar


def split_source_target(inputs: torch.Tensor, labels: torch.Tensor, num_kv_pairs: int):
    """MQAR (N, L) -> source (N, 2kv) = the key-value block, target (N, L-2kv) and its labels."""
    context = 2 * num_kv_pairs
    return inputs[:, :context].contiguous(), inputs[:, context:].contiguous(), labels[:, context:].contiguous()


class MQARCrossModel(nn.Module):
    def __init__(self, attention, pattern: Pattern, vocab_size: int, d_model: int, num_heads: int,
                 encoder_layers: int, decoder_layers: int, max_source_len: int, max_target_len: int,
                 mlp_ratio: int = 0, embed_dropout: float = 0.1):
        super().__init__()
        self_role = Pattern.CAUSAL_SELF if pattern is Pattern.CAUSAL_CROSS else Pattern.NONCAUSAL_SELF
        self.source_embed = TokenEmbedding(vocab_size, d_model, max_source_len, embed_dropout)
        self.encoder = nn.ModuleList([Block(d_model, attention(Pattern.NONCAUSAL_SELF, d_model, num_heads), mlp_ratio)
                                      for _ in range(encoder_layers)])
        self.encoder_norm = nn.LayerNorm(d_model)
        self.target_embed = TokenEmbedding(vocab_size, d_model, max_target_len, embed_dropout)
        self.decoder = nn.ModuleList([
            CrossBlock(d_model, attention(self_role, d_model, num_heads), attention(pattern, d_model, num_heads), mlp_ratio)
            for _ in range(decoder_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        init_weights(self)
        self.head.weight = self.target_embed.tokens.weight  # tied, as in Zoology's LM head

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
class MQARCrossTask(Task):
    """MQAR across two sequences: the key-value block is the source, the queries are the target."""

    primary_metric = "accuracy"
    metric_info = {
        "accuracy": MetricInfo(True, "fraction of queries whose value is predicted exactly (mean over test segments)"),
        "loss": MetricInfo(False, "cross-entropy at query positions (nats)"),
    }

    def __init__(self, pattern: Pattern, seed: int, vocab_size: int = 8192, seq_len: int = 256,
                 num_kv_pairs: int = 16, train_examples: int = 100_000, test_examples: int = 3_000,
                 train_segments: list[dict] | None = None, test_segments: list[dict] | None = None,
                 d_model: int = 64, num_heads: int = 1, encoder_layers: int = 1, decoder_layers: int = 1,
                 mlp_ratio: int = 0, embed_dropout: float = 0.1, power_a: float = 0.01,
                 random_non_queries: bool = False, eval_batch_size: int = 256, **extra: Any):
        super().__init__(pattern, seed, seq_len=seq_len)
        if extra:
            raise ValueError(f"mqar_cross: unknown parameters {sorted(extra)}")
        self.vocab_size, self.power_a, self.random_non_queries = vocab_size, power_a, random_non_queries
        self.d_model, self.num_heads, self.mlp_ratio, self.embed_dropout = d_model, num_heads, mlp_ratio, embed_dropout
        self.encoder_layers, self.decoder_layers, self.eval_batch_size = encoder_layers, decoder_layers, eval_batch_size
        self.train_segments = [Segment(**s) for s in train_segments] if train_segments else [
            Segment(seq_len, num_kv_pairs, train_examples)]
        self.test_segments = [Segment(**s) for s in test_segments] if test_segments else [
            Segment(seq_len, num_kv_pairs, test_examples)]
        segments = self.train_segments + self.test_segments
        self.max_source_len = max(2 * s.num_kv_pairs for s in segments)
        self.max_target_len = max(s.seq_len - 2 * s.num_kv_pairs for s in segments)
        self.train_data = [self._generate(s, seed * 1000 + i) for i, s in enumerate(self.train_segments)]
        self.test_data = [self._generate(s, TEST_SEED_OFFSET + seed * 1000 + i) for i, s in enumerate(self.test_segments)]

    def _generate(self, s: Segment, seed: int):
        inputs, labels = multiquery_ar(s.num_examples, s.seq_len, s.num_kv_pairs, self.vocab_size, self.power_a, seed,
                                       self.random_non_queries)
        return split_source_target(inputs, labels, s.num_kv_pairs)

    def build_model(self, attention) -> nn.Module:
        return MQARCrossModel(attention, self.pattern, self.vocab_size, self.d_model, self.num_heads,
                              self.encoder_layers, self.decoder_layers, self.max_source_len, self.max_target_len,
                              self.mlp_ratio, self.embed_dropout)

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch: each segment's examples in a fresh seeded order; batches never mix segments."""
        g = self.epoch_generator()
        for source, target, labels in self.train_data:
            for idx in batch_indices(source.shape[0], batch_size, g):
                yield source[idx], target[idx], labels[idx]

    def forward(self, model, batch):
        source, target, labels = batch
        return model(source, target, labels)

    def loss(self, outputs, batch):
        labels = batch[2]
        return F.cross_entropy(outputs, labels[labels != -100])

    def tokens(self, batch) -> int:
        return batch[0].numel() + batch[1].numel()

    def example_batch(self):
        source, target, labels = self.test_data[0]
        return source[:1], target[:1], labels[:1]

    def attention_lengths(self):
        return {self.pattern: (self.max_target_len, self.max_source_len)}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Zoology's metric: per example, the fraction of its queries answered right; averaged over
        examples, each test segment weighted equally. Safe to call mid-training (no state kept)."""
        device = next(model.parameters()).device
        metrics: dict[str, float] = {}
        accs, losses = [], []
        for segment, (source, target, labels) in zip(self.test_segments, self.test_data):
            per_example, loss_sum, count = [], 0.0, 0
            for start in range(0, source.shape[0], self.eval_batch_size):
                end = start + self.eval_batch_size
                y = labels[start:end].to(device)
                logits = model(source[start:end].to(device), target[start:end].to(device), y)  # (Q, V)
                wanted = y[y != -100]
                loss_sum += F.cross_entropy(logits, wanted, reduction="sum").item()
                count += wanted.numel()
                hits = torch.zeros_like(y, dtype=torch.float)
                hits[y != -100] = (logits.argmax(-1) == wanted).float()
                per_example.append(hits.sum(1) / (y != -100).sum(1))
            accs.append(torch.cat(per_example).mean().item())
            losses.append(loss_sum / count)
            if len(self.test_segments) > 1:
                metrics[f"accuracy/{segment.slice_name}"] = accs[-1]
        metrics["accuracy"] = sum(accs) / len(accs)
        metrics["loss"] = sum(losses) / len(losses)
        return metrics

    def reference_metrics(self) -> dict[str, float]:
        """Chance level: guessing one of the example's `kv` source values uniformly."""
        return {"accuracy_guess_a_context_value": sum(1 / s.num_kv_pairs for s in self.test_segments) / len(self.test_segments)}
