"""Span-corruption seq2seq on Tiny Shakespeare (T5's objective, Raffel et al., JMLR 2020, §3.1.4),
on characters: the encoder reads a window with random spans replaced by sentinel tokens, and the
decoder writes, left to right, each sentinel followed by the characters it hid, then EOS.

    text      T h e   q u i c k   b r o w n
    encoder   T h e <0> u i c k <1> r o w n
    decoder   <0> ␣ q <1> ␣ b <EOS>

This is CAB's autoregressive encoder-decoder setting (its Sum and Transformer-TTS tasks) at CPU
size, the only one of our real tasks with **causal cross** attention: the decoder generates left
to right, so its queries into the encoder must not depend on later queries. Roles:
encoder self = noncausal_self, decoder self = causal_self, decoder -> encoder = causal_cross.

Noise follows T5: density 15%, mean span length 3; a window of `seq_len` characters has exactly
round(0.15·L) noise characters in round(noise / 3) spans, the span and gap lengths drawn as a
random composition (T5's `random_spans_noise_mask`), so every example has the same lengths.

Metrics (teacher forcing, test split, masks drawn once from a fixed seed): accuracy and bits per
character of the decoded span characters (sentinels and EOS are left out: their place is
given by the format). Baseline: the train-fitted unigram model's bits per character on the same
characters.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import init_weights
from cab.task import MetricInfo

from ._seq import Decoder, Encoder, TokenSinusoidal
from ._text import BITS, char_corpus, majority_accuracy, random_windows, tiled_windows, unigram_bits_per_char

TEST_MASK_SEED = 20_231_116


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise characters, spans) for a window of `length` (T5's rounding)."""
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    return num_noise, num_spans


def _random_composition(total: int, parts: int, g: torch.Generator) -> torch.Tensor:
    """(parts,) positive integers summing to `total`, uniformly over compositions."""
    cuts = torch.randperm(total - 1, generator=g)[: parts - 1] + 1
    edges = torch.cat([torch.zeros(1, dtype=torch.long), cuts.sort().values, torch.tensor([total])])
    return edges.diff()


def span_noise_mask(batch: int, length: int, noise_density: float, mean_span_length: float,
                    g: torch.Generator) -> torch.Tensor:
    """(B, L) bool, True = hidden; each row: a gap, a span, a gap, a span, ... (a gap first)."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    rows = []
    for _ in range(batch):
        spans = _random_composition(num_noise, num_spans, g)
        gaps = _random_composition(length - num_noise, num_spans, g)
        run_lengths = torch.stack([gaps, spans], dim=1).flatten()  # gap0 span0 gap1 span1 ...
        flags = torch.tensor([False, True]).repeat(num_spans)
        rows.append(flags.repeat_interleave(run_lengths))
    return torch.stack(rows)


def corrupt(ids: torch.Tensor, noise: torch.Tensor, sentinel0: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids, noise: (B, L). Sentinel i has id sentinel0 + i. Returns encoder input (B, Ls) and target
    (B, Lt), Ls = L - noise + spans, Lt = noise + spans + 1 (the same for every row)."""
    b = ids.shape[0]
    start = noise & ~F.pad(noise, (1, 0))[:, :-1]  # first character of each span
    sentinel = sentinel0 + start.long().cumsum(1) - 1  # (B, L): the span's sentinel id at its start
    # encoder: keep the gaps, and each span's first position, which becomes its sentinel
    source = torch.where(start, sentinel, ids)[~noise | start].view(b, -1)
    # target: interleave [sentinel if span starts here] [character if hidden], then EOS
    slots = torch.stack([torch.where(start, sentinel, -1), torch.where(noise, ids, -1)], dim=2).view(b, -1)
    target = slots[slots >= 0].view(b, -1)
    return source, torch.cat([target, torch.full((b, 1), eos)], dim=1)


class SpanSeq2Seq(nn.Module):
    """Encoder-decoder transformer with one embedding table shared by both sides and the output."""

    def __init__(self, attention, vocab_size: int, d_model: int, num_heads: int, enc_layers: int, dec_layers: int,
                 mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.embed = TokenSinusoidal(vocab_size, d_model, dropout)
        self.encoder = Encoder(attention, d_model, num_heads, enc_layers, mlp_ratio, dropout)
        self.decoder = Decoder(attention, d_model, num_heads, dec_layers, Pattern.CAUSAL_CROSS, mlp_ratio, dropout)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        init_weights(self)
        self.head.weight = self.embed.tokens.weight

    def forward(self, source: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
        memory = self.encoder(self.embed(source))  # (B, Ls, d)
        return self.head(self.decoder(self.embed(decoder_input), memory))  # (B, Lt, V)


@register_task("seq2seq", patterns=[Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF, Pattern.CAUSAL_CROSS])
class SpanCorruptionTask(Task):
    """T5-style span corruption on Tiny Shakespeare characters: accuracy and bits/char of the spans."""

    primary_metric = "bpc"
    metric_info = {
        "accuracy": MetricInfo(True, "fraction of hidden test characters the decoder predicts exactly (teacher forcing)"),
        "bpc": MetricInfo(False, "bits per character of the hidden test characters (teacher forcing)"),
    }
    param_constraints = {"noise_density": {"gt": 0, "lt": 1}}

    def __init__(self, pattern: Pattern, seed: int, seq_len: int = 256, noise_density: float = 0.15,
                 mean_span_length: float = 3.0, d_model: int = 128, num_heads: int = 4, enc_layers: int = 2,
                 dec_layers: int = 2, mlp_ratio: int = 4, dropout: float = 0.1, eval_chars: int | None = None,
                 eval_batch_size: int = 64, data_dir: str | None = None, data_url: str | None = None,
                 data_sha256: str | None = None, **extra: Any):
        super().__init__(pattern, seed, seq_len=seq_len)
        if extra:
            raise ValueError(f"seq2seq: unknown parameters {sorted(extra)}")
        self.seq_len, self.noise_density, self.mean_span_length = seq_len, noise_density, mean_span_length
        self.d_model, self.num_heads, self.enc_layers, self.dec_layers = d_model, num_heads, enc_layers, dec_layers
        self.mlp_ratio, self.dropout, self.eval_batch_size = mlp_ratio, dropout, eval_batch_size
        self.corpus = char_corpus(data_dir, data_url, data_sha256)
        v = self.corpus.vocab_size
        self.num_noise, self.num_spans = span_counts(seq_len, noise_density, mean_span_length)
        # ids: characters 0..V-1, sentinels V..V+spans-1, then BOS and EOS
        self.sentinel0, self.bos, self.eos = v, v + self.num_spans, v + self.num_spans + 1
        self.vocab_size = v + self.num_spans + 2
        windows = tiled_windows(self.corpus.test, seq_len, limit=eval_chars)
        self.test_source, self.test_target = self._corrupt(windows, torch.Generator().manual_seed(TEST_MASK_SEED))

    def _corrupt(self, windows: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        noise = span_noise_mask(windows.shape[0], self.seq_len, self.noise_density, self.mean_span_length, g)
        return corrupt(windows, noise, self.sentinel0, self.eos)

    def build_model(self, attention) -> nn.Module:
        return SpanSeq2Seq(attention, self.vocab_size, self.d_model, self.num_heads, self.enc_layers, self.dec_layers,
                           self.mlp_ratio, self.dropout)

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of random windows with fresh span masks, seeded per epoch."""
        g = self.epoch_generator()
        for _ in range(max(1, self.corpus.train.numel() // (batch_size * self.seq_len))):
            yield self._corrupt(random_windows(self.corpus.train, self.seq_len, batch_size, g), g)

    def _decoder_input(self, target: torch.Tensor) -> torch.Tensor:
        bos = torch.full_like(target[:, :1], self.bos)
        return torch.cat([bos, target[:, :-1]], dim=1)  # teacher forcing: BOS, then the target shifted

    def forward(self, model, batch):
        source, target = batch
        return model(source, self._decoder_input(target))  # (B, Lt, V)

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs.flatten(0, 1), batch[1].flatten())

    def tokens(self, batch) -> int:
        return batch[0].numel() + batch[1].numel()

    def example_batch(self):
        return self.test_source[:1], self.test_target[:1]

    def attention_lengths(self):
        ls, lt = self.test_source.shape[1], self.test_target.shape[1]
        return {Pattern.NONCAUSAL_SELF: (ls, ls), Pattern.CAUSAL_SELF: (lt, lt), Pattern.CAUSAL_CROSS: (lt, ls)}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        nats, hits, count = 0.0, 0, 0
        for start in range(0, self.test_source.shape[0], self.eval_batch_size):
            batch = (self.test_source[start : start + self.eval_batch_size].to(device),
                     self.test_target[start : start + self.eval_batch_size].to(device))
            logits = self.forward(model, batch)
            target = batch[1]
            chars = target < self.corpus.vocab_size  # hidden characters, not sentinels or EOS
            logits, target = logits[chars], target[chars]
            nats += F.cross_entropy(logits, target, reduction="sum").item()
            hits += int((logits.argmax(-1) == target).sum())
            count += target.numel()
        return {"accuracy": hits / count, "bpc": nats / count * BITS}

    def reference_metrics(self) -> dict[str, float]:
        targets = self.test_target[self.test_target < self.corpus.vocab_size]
        train, v = self.corpus.train, self.corpus.vocab_size
        return {"bpc_unigram": unigram_bits_per_char(train, targets, v),
                "accuracy_majority_char": majority_accuracy(train, targets, v)}
