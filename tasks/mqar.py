"""MQAR, multi-query associative recall (Arora et al., "Zoology", ICLR 2024).

An example of length L holds `kv` key-value pairs `k1 v1 k2 v2 ...`, then a query region where each
key appears once more, at an even offset drawn from a power law that favours early slots
(p(slot i) ∝ a·i^(a-1), a = 0.01). The model must emit the key's value at the position where it
reads the key again (labels are -100 everywhere else). Keys come from 1 .. V/2-1 and values from
V/2 .. V-1, distinct within an example; 0 is the filler. Accuracy: per example, the fraction of
queries answered right; averaged over examples, each test segment weighted equally (Zoology).

The model follows Zoology: token (+ learned position) embedding, `num_layers` pre-norm blocks of
the attention under test with no MLP, a final LayerNorm and an LM head tied to the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import Block, TokenEmbedding, init_weights
from cab.task import MetricInfo, ParamError, batch_indices

TEST_SEED_OFFSET = 2**31  # train seeds are < 2^31, test seeds >= 2^31: never the same stream


def _distinct_draws(num: int, choices: int, k: int, g: torch.Generator, chunk: int = 4096) -> torch.Tensor:
    """(num, k) indices in [0, choices), distinct within each row: the top-k of uniform noise."""
    rows = []
    for start in range(0, num, chunk):
        n = min(chunk, num - start)
        rows.append(torch.rand(n, choices, generator=g).topk(k, dim=1).indices)
    return torch.cat(rows)


def multiquery_ar(
    num_examples: int,
    seq_len: int,
    num_kv_pairs: int,
    vocab_size: int = 8192,
    power_a: float = 0.01,
    seed: int = 0,
    random_non_queries: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoology's MQAR generator, vectorised. Returns inputs (N, L) int64 and labels (N, L) int64."""
    kv = num_kv_pairs
    if seq_len % 2:
        raise ValueError(f"seq_len must be even, got {seq_len}")
    if vocab_size <= seq_len:
        raise ValueError(f"vocab_size ({vocab_size}) must exceed seq_len ({seq_len})")
    if 4 * kv > seq_len:
        raise ValueError(f"4 * num_kv_pairs ({4 * kv}) must be <= seq_len ({seq_len})")
    g = torch.Generator().manual_seed(seed)
    half = vocab_size // 2
    keys = _distinct_draws(num_examples, half - 1, kv, g) + 1  # (N, kv) in 1 .. V/2-1
    values = _distinct_draws(num_examples, vocab_size - half, kv, g) + half  # (N, kv) in V/2 .. V-1

    context = 2 * kv
    space = (seq_len - context) // 2  # two-token query slots after the context
    slot = torch.arange(1, space + 1, dtype=torch.float64)
    log_p = torch.log(power_a * slot ** (power_a - 1))
    log_p = log_p - torch.logsumexp(log_p, 0)
    # sampling kv slots without replacement ∝ p  ==  top-kv of log p + Gumbel noise
    gumbel = -torch.log(-torch.log(torch.rand(num_examples, space, generator=g, dtype=torch.float64)))
    slots = (log_p + gumbel).topk(kv, dim=1).indices  # (N, kv) in 0 .. space-1

    inputs = torch.zeros(num_examples, seq_len, dtype=torch.long)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    positions = context + 2 * slots  # even offsets in the query region
    inputs.scatter_(1, positions, keys)
    labels = torch.full((num_examples, seq_len), -100, dtype=torch.long)
    labels.scatter_(1, positions, values)
    if random_non_queries:
        filler = inputs == 0
        inputs[filler] = torch.randint(0, vocab_size, (int(filler.sum()),), generator=g)
    return inputs, labels


@dataclass(frozen=True)
class Segment:
    seq_len: int
    num_kv_pairs: int
    num_examples: int

    @property
    def slice_name(self) -> str:
        return f"L{self.seq_len}_kv{self.num_kv_pairs}"


class MQARModel(nn.Module):
    def __init__(self, attention, pattern: Pattern, vocab_size: int, d_model: int, num_heads: int, num_layers: int,
                 max_len: int, mlp_ratio: int = 0, embed_dropout: float = 0.1, short_conv: int = 0):
        super().__init__()
        self.embed = TokenEmbedding(vocab_size, d_model, max_len, embed_dropout)
        self.blocks = nn.ModuleList(
            [Block(d_model, attention(pattern, d_model, num_heads), mlp_ratio, short_conv=short_conv)
             for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        init_weights(self)
        self.head.weight = self.embed.tokens.weight  # tied

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(ids)  # (B, L, d)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if labels is not None:  # logits only where there is a label: the loss ignores the rest
            x = x[labels != -100]  # (Q, d)
        return self.head(x)  # (Q, V) or (B, L, V)


@register_task("mqar", patterns=[Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF])
class MQARTask(Task):
    """Multi-query associative recall (Zoology): recall the value bound to each queried key."""

    primary_metric = "accuracy"
    metric_info = {
        "accuracy": MetricInfo(True, "fraction of queries whose value is predicted exactly (mean over test segments)"),
        "loss": MetricInfo(False, "cross-entropy at query positions (nats)"),
    }
    param_constraints = {"power_a": {"gt": 0}}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """The generator's rules (`multiquery_ar`) for every segment a job would generate."""
        segments = []
        for which in ("train", "test"):
            given = params.get(f"{which}_segments")
            if not given:
                segments.append(("", params["seq_len"], params["num_kv_pairs"]))
                continue
            for i, segment in enumerate(given):
                key = f"{which}_segments.{i}"
                if not isinstance(segment, dict) or set(segment) != {"seq_len", "num_kv_pairs", "num_examples"}:
                    raise ParamError(key, "expected {seq_len: L, num_kv_pairs: K, num_examples: N}")
                for field, value in segment.items():
                    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                        raise ParamError(f"{key}.{field}", "expected an integer >= 1")
                segments.append((f"{key}.", segment["seq_len"], segment["num_kv_pairs"]))
        for prefix, seq_len, kv in segments:
            if seq_len % 2:
                raise ParamError(f"{prefix}seq_len", "must be even (key-value pairs, then query-answer pairs)")
            if 4 * kv > seq_len:
                raise ParamError(f"{prefix}num_kv_pairs", f"must be <= seq_len / 4 ({seq_len // 4} for length {seq_len})")
            if params["vocab_size"] <= seq_len:
                raise ParamError("vocab_size", f"must exceed every seq_len (here {seq_len})")

    def __init__(self, pattern: Pattern, seed: int, vocab_size: int = 8192, seq_len: int = 256,
                 num_kv_pairs: int = 16, train_examples: int = 100_000, test_examples: int = 3_000,
                 train_segments: list[dict] | None = None, test_segments: list[dict] | None = None,
                 d_model: int = 64, num_heads: int = 1, num_layers: int = 2, mlp_ratio: int = 0,
                 embed_dropout: float = 0.1, power_a: float = 0.01, random_non_queries: bool = False,
                 short_conv: int = 0, validation_examples: int = 0, eval_batch_size: int = 256, **extra: Any):
        super().__init__(pattern, seed, seq_len=seq_len)
        if extra:
            raise ValueError(f"{self.task_name}: unknown parameters {sorted(extra)}")
        self.vocab_size, self.power_a, self.random_non_queries = vocab_size, power_a, random_non_queries
        self.d_model, self.num_heads, self.num_layers, self.mlp_ratio = d_model, num_heads, num_layers, mlp_ratio
        self.embed_dropout, self.eval_batch_size = embed_dropout, eval_batch_size
        self.short_conv = short_conv  # kernel of a depthwise convolution before each mixer (0: none)
        self.train_segments = [Segment(**s) for s in train_segments] if train_segments else [
            Segment(seq_len, num_kv_pairs, train_examples)]
        self.test_segments = [Segment(**s) for s in test_segments] if test_segments else [
            Segment(seq_len, num_kv_pairs, test_examples)]
        self.max_len = max(s.seq_len for s in self.train_segments + self.test_segments)
        self.train_data = [self._generate(s, seed * 1000 + i) for i, s in enumerate(self.train_segments)]
        self.test_data = [self._generate(s, TEST_SEED_OFFSET + seed * 1000 + i) for i, s in enumerate(self.test_segments)]
        # Validation: the last `validation_examples` of each training segment, held out of training.
        self.validation_data: list[tuple[torch.Tensor, ...]] = []
        if validation_examples:
            for i, (segment, tensors) in enumerate(zip(self.train_segments, self.train_data)):
                if validation_examples >= segment.num_examples:
                    raise ValueError(f"{self.task_name}: validation_examples ({validation_examples}) must be fewer "
                                     f"than the training segment's {segment.num_examples} examples")
                cut = segment.num_examples - validation_examples
                self.train_data[i] = tuple(t[:cut] for t in tensors)
                self.validation_data.append(tuple(t[cut:] for t in tensors))

    def _generate(self, segment: Segment, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return multiquery_ar(segment.num_examples, segment.seq_len, segment.num_kv_pairs, self.vocab_size,
                             self.power_a, seed, self.random_non_queries)

    def build_model(self, attention) -> nn.Module:
        return MQARModel(attention, self.pattern, self.vocab_size, self.d_model, self.num_heads, self.num_layers,
                         self.max_len, self.mlp_ratio, self.embed_dropout, self.short_conv)

    # Every example is a tuple of tensors ending in its labels, (inputs, labels) here; subclasses
    # (mqar_cross: (source, target, labels)) reuse batching, loss and the metric unchanged.
    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch: each segment's examples in a fresh seeded order; batches never mix segments."""
        g = self.epoch_generator()
        for tensors in self.train_data:
            for idx in batch_indices(tensors[0].shape[0], batch_size, g):
                yield tuple(t[idx] for t in tensors)

    def forward(self, model, batch):
        return model(*batch)  # logits at the labelled positions only

    def loss(self, outputs, batch):
        labels = batch[-1]
        return F.cross_entropy(outputs, labels[labels != -100])

    def tokens(self, batch) -> int:
        return sum(t.numel() for t in batch[:-1])

    def example_batch(self):
        return tuple(t[:1] for t in self.test_data[0])

    def attention_lengths(self):
        return {self.pattern: (self.max_len, self.max_len)}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Zoology's metric: per example, the fraction of its queries answered right; averaged over
        examples, each test segment weighted equally. Safe to call mid-training (no state kept)."""
        return self._score(model, self.test_segments, self.test_data)

    def has_validation(self) -> bool:
        return bool(self.validation_data)

    @torch.no_grad()
    def validate(self, model) -> dict[str, float]:
        if not self.validation_data:
            return super().validate(model)
        return self._score(model, self.train_segments, self.validation_data)

    def _score(self, model, segments: list[Segment], data: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
        device = next(model.parameters()).device
        metrics: dict[str, float] = {}
        accs, losses = [], []
        for segment, tensors in zip(segments, data):
            correct_per_example, loss_sum, count = [], 0.0, 0
            for start in range(0, tensors[0].shape[0], self.eval_batch_size):
                batch = [t[start : start + self.eval_batch_size].to(device) for t in tensors]
                y = batch[-1]
                logits = model(*batch)  # (Q, V), queries in row-major order
                target = y[y != -100]
                loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
                count += target.numel()
                hits = torch.zeros_like(y, dtype=torch.float)
                hits[y != -100] = (logits.argmax(-1) == target).float()
                correct_per_example.append(hits.sum(1) / (y != -100).sum(1))
            acc = torch.cat(correct_per_example).mean().item()
            accs.append(acc)
            losses.append(loss_sum / count)
            if len(segments) > 1:
                metrics[f"accuracy/{segment.slice_name}"] = acc
        metrics["accuracy"] = sum(accs) / len(accs)
        metrics["loss"] = sum(losses) / len(losses)
        return metrics

    def reference_metrics(self) -> dict[str, float]:
        """Chance levels: guessing one of the example's `kv` context values uniformly."""
        return {"accuracy_guess_a_context_value": sum(1 / s.num_kv_pairs for s in self.test_segments) / len(self.test_segments)}
