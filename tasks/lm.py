"""Character language modelling on Tiny Shakespeare: CAB's LM task (GPT-2 on PG-19) at CPU size.

A decoder-only transformer (nanoGPT's shakespeare_char shape, smaller) reads `seq_len` characters
and predicts each next one; only its causal self attention is the mechanism under test. Metric:
bits per character on the test split (last 5% of the file), read as non-overlapping windows of
`seq_len` + 1 characters. CAB also trains its LM at one length and evaluates beyond it
(interpolation/extrapolation, cab_lra.md §1.6); here `bpc_2x` is the same test text read in
windows of 2 × `seq_len`. Positions are sinusoidal, so they exist at any length; a mechanism that
generalises to the longer context gets a lower bpc there (more context per prediction), one that
does not gets a higher one.

Baseline beside every result: a unigram model fitted on the training split (bits per character).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import Block, init_weights
from cab.task import MetricInfo

from ._seq import TokenSinusoidal
from ._text import BITS, char_corpus, random_windows, tiled_windows, unigram_bits_per_char


class CharLM(nn.Module):
    def __init__(self, attention, vocab_size: int, d_model: int, num_heads: int, num_layers: int,
                 mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.embed = TokenSinusoidal(vocab_size, d_model, dropout)
        self.blocks = nn.ModuleList(
            [Block(d_model, attention(Pattern.CAUSAL_SELF, d_model, num_heads), mlp_ratio, dropout)
             for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        init_weights(self)
        self.head.weight = self.embed.tokens.weight  # tied (GPT-2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # (B, L, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (B, L, V)

    # decode (generation, docs/decode.md): every block's decode state, one token at a time
    def prefill(self, ids: torch.Tensor):
        """ids: (B, L) prompt -> (logits (B, L, V) = self(ids), the blocks' states)."""
        x, states = self.embed(ids), []
        for block in self.blocks:
            x, state = block.prefill(x)
            states.append(state)
        return self.head(self.norm(x)), states

    def step(self, ids: torch.Tensor, states: list):
        """ids: (B, 1), the next token -> (its logits (B, 1, V), the states after it)."""
        x = self.embed(ids, start=states[0].position)
        for i, block in enumerate(self.blocks):
            x, states[i] = block.step(x, states[i])
        return self.head(self.norm(x)), states


@register_task("lm", patterns=[Pattern.CAUSAL_SELF])
class CharLMTask(Task):
    """Character language modelling on Tiny Shakespeare (bits per character, and at 2x context)."""

    primary_metric = "bpc"
    metric_info = {
        "bpc": MetricInfo(False, "bits per character on the test split, windows of the training context"),
        "bpc_2x": MetricInfo(False, "bits per character on the test split, windows of twice the training context (extrapolation)"),
    }

    def __init__(self, pattern: Pattern, seed: int, seq_len: int = 256, d_model: int = 128, num_heads: int = 4,
                 num_layers: int = 4, mlp_ratio: int = 4, dropout: float = 0.1, eval_chars: int | None = None,
                 eval_batch_size: int = 64, data_dir: str | None = None, data_url: str | None = None,
                 data_sha256: str | None = None, **extra: Any):
        super().__init__(pattern, seed, seq_len=seq_len)
        if extra:
            raise ValueError(f"lm: unknown parameters {sorted(extra)}")
        self.seq_len, self.d_model, self.num_heads, self.num_layers = seq_len, d_model, num_heads, num_layers
        self.mlp_ratio, self.dropout = mlp_ratio, dropout
        self.eval_chars, self.eval_batch_size = eval_chars, eval_batch_size
        self.corpus = char_corpus(data_dir, data_url, data_sha256)

    def build_model(self, attention) -> nn.Module:
        return CharLM(attention, self.corpus.vocab_size, self.d_model, self.num_heads, self.num_layers,
                      self.mlp_ratio, self.dropout)

    def train_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """One epoch: as many random windows as the training split holds, seeded per epoch."""
        g = self.epoch_generator()
        for _ in range(max(1, self.corpus.train.numel() // (batch_size * self.seq_len))):
            yield random_windows(self.corpus.train, self.seq_len + 1, batch_size, g)  # (B, L+1)

    def forward(self, model, batch):
        return model(batch[:, :-1])  # (B, L, V)

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs.flatten(0, 1), batch[:, 1:].flatten())

    def tokens(self, batch) -> int:
        return batch[:, :-1].numel()

    def example_batch(self):
        return self.corpus.test[: self.seq_len + 1][None]

    def attention_lengths(self):
        return {Pattern.CAUSAL_SELF: (self.seq_len, self.seq_len)}

    def longest_attention_lengths(self):
        return {Pattern.CAUSAL_SELF: (2 * self.seq_len, 2 * self.seq_len)}  # bpc_2x reads twice the context

    def _bpc(self, model, context: int) -> float:
        device = next(model.parameters()).device
        windows = tiled_windows(self.corpus.test, context + 1, stride=context, limit=self.eval_chars)
        nats, count = 0.0, 0
        for start in range(0, windows.shape[0], self.eval_batch_size):
            w = windows[start : start + self.eval_batch_size].to(device)  # (b, context+1)
            logits = model(w[:, :-1])
            nats += F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
            count += w[:, 1:].numel()
        return nats / count * BITS

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        return {"bpc": self._bpc(model, self.seq_len), "bpc_2x": self._bpc(model, 2 * self.seq_len)}

    def reference_metrics(self) -> dict[str, float]:
        test = self.corpus.test[: self.eval_chars] if self.eval_chars else self.corpus.test
        return {"bpc_unigram": unigram_bits_per_char(self.corpus.train, test, self.corpus.vocab_size)}
