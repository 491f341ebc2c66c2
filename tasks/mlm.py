"""Masked character modelling on Tiny Shakespeare: CAB's MLM task (RoBERTa on PG-19) at CPU size.

An encoder reads `seq_len` characters of which 15% are chosen as targets (BERT, Devlin et al.
2019, §3.1): of those, 80% are replaced by a [MASK] token, 10% by a random character and 10% kept;
the model predicts the original character at every chosen position. Its only attention is
noncausal self, the mechanism under test.

Metrics on the test split (last 5%, non-overlapping windows, the chosen positions and their
corruption drawn once from a fixed seed so every run is scored on the same targets): accuracy of
the masked characters and their bits per character. Baselines: the train-fitted unigram model's
bits per character and the accuracy of always guessing the most frequent training character, on
the same targets.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import init_weights
from cab.task import MetricInfo

from ._seq import Encoder, TokenSinusoidal
from ._text import BITS, char_corpus, majority_accuracy, random_windows, tiled_windows, unigram_bits_per_char

TEST_MASK_SEED = 20_231_115  # one fixed draw of test targets for every run


def mask_tokens(ids: torch.Tensor, mask_id: int, vocab_size: int, g: torch.Generator,
                rate: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption. ids: (B, L). Returns inputs (B, L) and labels (B, L) with -100 where the
    position is not a target. Exactly round(rate·L) targets per row (at least one)."""
    b, length = ids.shape
    k = max(1, round(rate * length))
    chosen = torch.zeros(b, length, dtype=torch.bool)
    chosen.scatter_(1, torch.rand(b, length, generator=g).topk(k, dim=1).indices, True)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(b, length, generator=g)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = mask_id  # 80%: [MASK]
    swap = chosen & (roll >= 0.8) & (roll < 0.9)  # 10%: a random character; the last 10% unchanged
    inputs[swap] = torch.randint(0, vocab_size, (int(swap.sum()),), generator=g)
    return inputs, labels


class MaskedCharModel(nn.Module):
    def __init__(self, attention, vocab_size: int, d_model: int, num_heads: int, num_layers: int,
                 mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.embed = TokenSinusoidal(vocab_size + 1, d_model, dropout)  # + [MASK]
        self.encoder = Encoder(attention, d_model, num_heads, num_layers, mlp_ratio, dropout)
        self.head = nn.Linear(d_model, vocab_size + 1, bias=False)
        init_weights(self)
        self.head.weight = self.embed.tokens.weight  # tied

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embed(ids))  # (B, L, d)
        return self.head(x[labels != -100])[:, :-1]  # (Q, V): targets only; [MASK] is never an answer


@register_task("mlm", patterns=[Pattern.NONCAUSAL_SELF])
class MaskedCharTask(Task):
    """Masked character modelling on Tiny Shakespeare (15% BERT masking): accuracy and bits/char."""

    primary_metric = "bpc"
    metric_info = {
        "accuracy": MetricInfo(True, "fraction of masked test characters predicted exactly"),
        "bpc": MetricInfo(False, "bits per character at the masked test positions"),
    }

    def __init__(self, pattern: Pattern, seed: int, seq_len: int = 256, mask_rate: float = 0.15, d_model: int = 128,
                 num_heads: int = 4, num_layers: int = 4, mlp_ratio: int = 4, dropout: float = 0.1,
                 eval_chars: int | None = None, eval_batch_size: int = 64, data_dir: str | None = None,
                 data_url: str | None = None, data_sha256: str | None = None, **extra: Any):
        super().__init__(pattern, seed, seq_len=seq_len)
        if extra:
            raise ValueError(f"mlm: unknown parameters {sorted(extra)}")
        self.seq_len, self.mask_rate = seq_len, mask_rate
        self.d_model, self.num_heads, self.num_layers, self.mlp_ratio, self.dropout = (
            d_model, num_heads, num_layers, mlp_ratio, dropout)
        self.eval_batch_size = eval_batch_size
        self.corpus = char_corpus(data_dir, data_url, data_sha256)
        self.mask_id = self.corpus.vocab_size
        windows = tiled_windows(self.corpus.test, seq_len, limit=eval_chars)
        g = torch.Generator().manual_seed(TEST_MASK_SEED)
        self.test_inputs, self.test_labels = mask_tokens(windows, self.mask_id, self.corpus.vocab_size, g, mask_rate)

    def build_model(self, attention) -> nn.Module:
        return MaskedCharModel(attention, self.corpus.vocab_size, self.d_model, self.num_heads, self.num_layers,
                               self.mlp_ratio, self.dropout)

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of random windows, freshly masked (RoBERTa's dynamic masking), seeded per epoch."""
        g = self.epoch_generator()
        for _ in range(max(1, self.corpus.train.numel() // (batch_size * self.seq_len))):
            windows = random_windows(self.corpus.train, self.seq_len, batch_size, g)
            yield mask_tokens(windows, self.mask_id, self.corpus.vocab_size, g, self.mask_rate)

    def forward(self, model, batch):
        inputs, labels = batch
        return model(inputs, labels)

    def loss(self, outputs, batch):
        _, labels = batch
        return F.cross_entropy(outputs, labels[labels != -100])

    def tokens(self, batch) -> int:
        return batch[0].numel()

    def example_batch(self):
        return self.test_inputs[:1], self.test_labels[:1]

    def attention_lengths(self):
        return {Pattern.NONCAUSAL_SELF: (self.seq_len, self.seq_len)}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        nats, hits, count = 0.0, 0, 0
        for start in range(0, self.test_inputs.shape[0], self.eval_batch_size):
            x = self.test_inputs[start : start + self.eval_batch_size].to(device)
            y = self.test_labels[start : start + self.eval_batch_size].to(device)
            logits = model(x, y)  # (Q, V)
            target = y[y != -100]
            nats += F.cross_entropy(logits, target, reduction="sum").item()
            hits += int((logits.argmax(-1) == target).sum())
            count += target.numel()
        return {"accuracy": hits / count, "bpc": nats / count * BITS}

    def reference_metrics(self) -> dict[str, float]:
        targets = self.test_labels[self.test_labels != -100]
        train, v = self.corpus.train, self.corpus.vocab_size
        return {"bpc_unigram": unigram_bits_per_char(train, targets, v),
                "accuracy_majority_char": majority_accuracy(train, targets, v)}
