"""Tiny Shakespeare as characters, shared by the lm, mlm and seq2seq tasks.

Splits are fixed by position in the file: the first 90% of the characters train, the next 5%
validate, the last 5% test (no shuffling: the test text is a contiguous, unseen stretch of plays).
The vocabulary is the sorted set of characters of the whole file (65 for Tiny Shakespeare), so
every test character has an id; the unigram baseline is fitted on the training split only, with
add-one smoothing so a character absent from training still has a finite cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cab.data import data_dir as resolve_data_dir
from cab.data import load_text

SPLIT_FRACTIONS = (0.90, 0.05, 0.05)  # train, validation, test


def split_bounds(n: int) -> dict[str, tuple[int, int]]:
    """[start, end) of each split of a text of `n` characters."""
    a = int(n * SPLIT_FRACTIONS[0])
    b = int(n * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]))
    return {"train": (0, a), "val": (a, b), "test": (b, n)}


@dataclass
class CharCorpus:
    chars: list[str]  # id -> character
    train: torch.Tensor  # (Ntrain,) int64 ids
    val: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.chars)


_CORPORA: dict[tuple, CharCorpus] = {}


def char_corpus(data_dir: str | None = None, data_url: str | None = None, data_sha256: str | None = None,
                dataset: str = "tinyshakespeare") -> CharCorpus:
    """Load (checksum-verified, cached per process) and split a character corpus."""
    key = (dataset, None if data_url else str(resolve_data_dir(data_dir)), data_url, data_sha256)
    if key not in _CORPORA:
        text = load_text(dataset, data_dir, data_url, data_sha256)
        _CORPORA[key] = corpus_from_text(text)
    return _CORPORA[key]


def corpus_from_text(text: str) -> CharCorpus:
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    bounds = split_bounds(len(ids))
    return CharCorpus(chars, *(ids[s:e] for s, e in bounds.values()))


def unigram_log_probs(train: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(V,) natural-log probabilities of the add-one-smoothed unigram model fitted on `train`."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    return (counts / counts.sum()).log()


def unigram_bits_per_char(train: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> float:
    """Bits per character of the train-fitted unigram model on `targets`."""
    log_p = unigram_log_probs(train, vocab_size)
    return float(-log_p[targets].mean() / math.log(2))


def majority_accuracy(train: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> float:
    """Accuracy of always guessing the most frequent training character."""
    top = int(torch.bincount(train, minlength=vocab_size).argmax())
    return float((targets == top).double().mean())


def random_windows(ids: torch.Tensor, length: int, count: int, g: torch.Generator) -> torch.Tensor:
    """(count, length) windows of `ids` at uniformly random offsets."""
    starts = torch.randint(0, ids.numel() - length + 1, (count,), generator=g)
    return ids[starts[:, None] + torch.arange(length)]


def tiled_windows(ids: torch.Tensor, length: int, stride: int | None = None, limit: int | None = None) -> torch.Tensor:
    """(N, length) windows every `stride` (default: `length`, no overlap) from the start of `ids`;
    `limit` caps how many characters are used (None: all)."""
    if limit:
        ids = ids[:limit]
    stride = stride or length
    if ids.numel() < length:
        raise ValueError(f"split has {ids.numel()} characters, fewer than one window of {length}")
    return ids.unfold(0, length, stride)


BITS = 1 / math.log(2)  # nats -> bits
