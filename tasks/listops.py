"""ListOps, the Long Range Arena version (Tay et al., ICLR 2021; `lra_benchmarks/data/listops.py`).

A nested prefix expression over the digits 0-9 with four operators, e.g.
    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]  ->  5
The model reads the whole expression and classifies its value (10 classes): sequence
classification with noncausal self attention, pooled through a class token (LRA's default) or a
mean over the tokens.

Generation follows LRA's rules (our own implementation):
  - operators MIN, MAX, MED (the median rounded down: int(np.median)), SM (sum mod 10); LRA's
    paper text says MEAN, its code uses MIN: we follow the code;
  - a node at depth < max_depth (10) is a leaf (a uniform digit) with probability 1 - 0.25 and an
    operator node otherwise; at max_depth it is always a leaf; an operator node has
    randint(2, max_args = 10) children, inclusive, and a uniform operator;
  - length counts tokens without parentheses: a leaf is 1, an operator node is 2 (operator and
    `]`) plus its children; a tree is kept only if min_length < length < max_length (strict),
    500 < L < 2000 at paper scale (shorter windows for the cpu and smoke presets);
  - the splits are de-duplicated: no expression occurs twice in train, or in both train and test.
The token sequence is exactly what LRA's input pipeline feeds its model (parentheses removed).
Test expressions come from a disjoint seed stream and are generated first; training expressions
that repeat a test expression are dropped.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import Block, TokenEmbedding, init_weights
from cab.task import MetricInfo, ParamError, batch_indices

TEST_SEED_OFFSET = 2**31

# vocabulary: 0 pad, 1..10 digits 0..9, then the operators, the closing bracket and the class token
PAD, CLS = 0, 16
OPERATORS = ("MIN", "MAX", "MED", "SM")
OP_TOKEN = {op: 11 + i for i, op in enumerate(OPERATORS)}  # [MIN 11, [MAX 12, [MED 13, [SM 14
CLOSE = 15
VOCAB_SIZE = 17
VALUE_P = 0.25  # LRA: probability that a non-maximal-depth node is an operator


class _TooLong(Exception):
    pass


def _apply(op: str, values: list[int]) -> int:
    if op == "MIN":
        return min(values)
    if op == "MAX":
        return max(values)
    if op == "SM":
        return sum(values) % 10
    ordered = sorted(values)  # MED: int(np.median) = floor of the mean of the middle pair
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, out: list[int], budget: int) -> int:
    """Append one (sub)tree's tokens to `out` and return its value. Raise _TooLong once `out` is
    past `budget` tokens: the tree would be rejected anyway, so stop building it."""
    r = 1.0 if depth >= max_depth else rng.random()
    if r > VALUE_P:
        value = rng.randint(0, 9)
        out.append(1 + value)
    else:
        num_args = rng.randint(2, max_args)
        op = OPERATORS[rng.randint(0, 3)]
        out.append(OP_TOKEN[op])
        values = [_tree(rng, depth + 1, max_depth, max_args, out, budget) for _ in range(num_args)]
        out.append(CLOSE)
        value = _apply(op, values)
    if len(out) >= budget:
        raise _TooLong
    return value


def sample_listops(num_examples: int, seed: int, min_length: int = 500, max_length: int = 2000,
                   max_depth: int = 10, max_args: int = 10, exclude: set[tuple[int, ...]] | None = None,
                   max_draws: int | None = None) -> tuple[list[tuple[int, ...]], list[int]]:
    """`num_examples` distinct expressions with min_length < len < max_length, as token tuples,
    and their values. Deterministic from `seed`; expressions in `exclude` are skipped."""
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    exclude = exclude or set()
    sequences, labels = [], []
    draws, limit = 0, max_draws or 10_000 * num_examples + 100_000
    while len(sequences) < num_examples:
        draws += 1
        if draws > limit:
            raise RuntimeError(f"listops: only {len(sequences)} of {num_examples} distinct expressions with "
                               f"{min_length} < length < {max_length} after {limit} draws")
        out: list[int] = []
        try:
            value = _tree(rng, 1, max_depth, max_args, out, max_length)
        except _TooLong:
            continue
        if len(out) <= min_length:
            continue
        key = tuple(out)
        if key in seen or key in exclude:
            continue
        seen.add(key)
        sequences.append(key)
        labels.append(value)
    return sequences, labels


def evaluate_tokens(tokens: list[int] | tuple[int, ...]) -> int:
    """Value of a token sequence (no class token or padding): the reference interpreter."""
    stack: list[list] = []
    result = None
    for t in tokens:
        if 1 <= t <= 10:
            if not stack:
                result = t - 1
            else:
                stack[-1].append(t - 1)
        elif t in OP_TOKEN.values():
            stack.append([OPERATORS[t - 11]])
        elif t == CLOSE:
            op, *values = stack.pop()
            value = _apply(op, values)
            if stack:
                stack[-1].append(value)
            else:
                result = value
        else:
            raise ValueError(f"token {t} is not part of an expression")
    if stack or result is None:
        raise ValueError("unbalanced expression")
    return result


def depth_of(tokens: tuple[int, ...]) -> int:
    depth = best = 0
    for t in tokens:
        if t in OP_TOKEN.values():
            depth += 1
            best = max(best, depth)
        elif t == CLOSE:
            depth -= 1
    return best + 1  # + the leaves under the deepest operator (LRA counts the root as depth 1)


def to_tensor(sequences: list[tuple[int, ...]], cls_token: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (N, 1 + max_len) with the class token first (if used), and lengths (N,)."""
    offset = 1 if cls_token else 0
    lengths = torch.tensor([len(s) + offset for s in sequences])
    ids = torch.full((len(sequences), int(lengths.max())), PAD, dtype=torch.long)
    for i, s in enumerate(sequences):
        if cls_token:
            ids[i, 0] = CLS
        ids[i, offset : offset + len(s)] = torch.tensor(s)
    return ids, lengths


class ListOpsModel(nn.Module):
    """LRA's classifier: embedding + learned positions, post-embedding pre-norm encoder blocks of
    noncausal self attention with an MLP, a final LayerNorm, class-token or mean pooling, linear head."""

    def __init__(self, attention, d_model: int, num_heads: int, num_layers: int, mlp_ratio: int, max_len: int,
                 pooling: str, dropout: float = 0.1, num_classes: int = 10):
        super().__init__()
        self.pooling = pooling
        self.embed = TokenEmbedding(VOCAB_SIZE, d_model, max_len, dropout)
        self.blocks = nn.ModuleList([Block(d_model, attention(Pattern.NONCAUSAL_SELF, d_model, num_heads), mlp_ratio, dropout)
                                     for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        init_weights(self)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        padding = ids == PAD  # (B, L) True = padding
        x = self.embed(ids)  # (B, L, d)
        for block in self.blocks:
            x = block(x, padding)
        x = self.norm(x)
        if self.pooling == "cls":
            pooled = x[:, 0]  # the class token
        else:  # mean over real tokens only
            keep = (~padding).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1)
        return self.head(pooled)  # (B, 10)


@register_task("listops", patterns=[Pattern.NONCAUSAL_SELF])
class ListOpsTask(Task):
    """LRA ListOps: the value (0-9) of a long nested MIN/MAX/MED/SM expression."""

    primary_metric = "accuracy"
    metric_info = {
        "accuracy": MetricInfo(True, "fraction of test expressions whose value is predicted exactly (10 classes)"),
        "loss": MetricInfo(False, "cross-entropy on the test set (nats)"),
    }
    param_constraints = {"min_length": {"ge": 0}, "max_depth": {"ge": 1}, "max_args": {"ge": 1},
                         "pooling": {"choices": ["cls", "mean"]}}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params["max_length"] < params["min_length"] + 2:  # kept: min_length < length < max_length
            raise ParamError("max_length", f"must be >= min_length + 2 ({params['min_length'] + 2}): "
                                           "expressions strictly between the two are kept")

    def __init__(self, pattern: Pattern, seed: int, train_examples: int = 96_000, test_examples: int = 2_000,
                 min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10,
                 d_model: int = 512, num_heads: int = 8, num_layers: int = 4, mlp_ratio: int = 2,
                 dropout: float = 0.1, pooling: str = "cls", validation_examples: int = 0, eval_batch_size: int = 64,
                 **extra: Any):
        super().__init__(pattern, seed, seq_len=max_length)
        if extra:
            raise ValueError(f"listops: unknown parameters {sorted(extra)}")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"listops: pooling must be 'cls' or 'mean', got {pooling!r}")
        self.d_model, self.num_heads, self.num_layers, self.mlp_ratio = d_model, num_heads, num_layers, mlp_ratio
        self.dropout, self.pooling, self.eval_batch_size = dropout, pooling, eval_batch_size
        rules = dict(min_length=min_length, max_length=max_length, max_depth=max_depth, max_args=max_args)
        test_seqs, test_labels = sample_listops(test_examples, TEST_SEED_OFFSET + seed, **rules)
        train_seqs, train_labels = sample_listops(train_examples, seed, exclude=set(test_seqs), **rules)
        cls_token = pooling == "cls"
        self.train_ids, self.train_lengths = to_tensor(train_seqs, cls_token)
        self.test_ids, self.test_lengths = to_tensor(test_seqs, cls_token)
        self.train_labels = torch.tensor(train_labels)
        self.test_labels = torch.tensor(test_labels)
        # Validation: the last `validation_examples` training expressions, held out of training.
        if validation_examples >= len(train_seqs):
            raise ValueError(f"listops: validation_examples ({validation_examples}) must be fewer than the "
                             f"{len(train_seqs)} training expressions")
        cut = len(train_seqs) - validation_examples
        self.val_ids, self.val_lengths, self.val_labels = (
            self.train_ids[cut:], self.train_lengths[cut:], self.train_labels[cut:])
        self.train_ids, self.train_lengths, self.train_labels = (
            self.train_ids[:cut], self.train_lengths[:cut], self.train_labels[:cut])
        self.max_len = max(self.train_ids.shape[1], self.test_ids.shape[1])

    def build_model(self, attention) -> nn.Module:
        return ListOpsModel(attention, self.d_model, self.num_heads, self.num_layers, self.mlp_ratio, self.max_len,
                            self.pooling, self.dropout)

    @staticmethod
    def _trim(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return ids[:, : int(lengths.max())]  # drop columns that are padding in every row

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in batch_indices(self.train_ids.shape[0], batch_size, self.epoch_generator()):
            yield self._trim(self.train_ids[idx], self.train_lengths[idx]), self.train_labels[idx]

    def forward(self, model, batch):
        return model(batch[0])

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs, batch[1])

    def tokens(self, batch) -> int:
        return int((batch[0] != PAD).sum())

    def example_batch(self):
        return self._trim(self.test_ids[:1], self.test_lengths[:1]), self.test_labels[:1]

    def attention_lengths(self):
        return {Pattern.NONCAUSAL_SELF: (self.max_len, self.max_len)}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        return self._score(model, self.test_ids, self.test_lengths, self.test_labels)

    def has_validation(self) -> bool:
        return len(self.val_labels) > 0

    @torch.no_grad()
    def validate(self, model) -> dict[str, float]:
        if not self.has_validation():
            return super().validate(model)
        return self._score(model, self.val_ids, self.val_lengths, self.val_labels)

    def _score(self, model, all_ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        device = next(model.parameters()).device
        order = torch.argsort(lengths)  # similar lengths together: less padding
        correct, loss_sum = 0, 0.0
        for start in range(0, len(order), self.eval_batch_size):
            idx = order[start : start + self.eval_batch_size]
            ids = self._trim(all_ids[idx], lengths[idx]).to(device)
            y = labels[idx].to(device)
            logits = model(ids)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
        n = len(order)
        return {"accuracy": correct / n, "loss": loss_sum / n}

    def reference_metrics(self) -> dict[str, float]:
        """Majority class: the most frequent training value, scored on the test set (LRA's weakest
        entries sit at this level, about 0.17 at paper scale)."""
        majority = int(torch.bincount(self.train_labels, minlength=10).argmax())
        return {
            "accuracy_majority_class": float((self.test_labels == majority).float().mean()),
            "accuracy_uniform_guess": 0.1,
        }
