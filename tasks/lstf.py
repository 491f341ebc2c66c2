"""Long sequence time-series forecasting on ETT: CAB's LSTF task (Informer, Zhou et al., AAAI 2021).

Data: ETTh1 or ETTh2 (`dataset`), 7 hourly series (HUFL … OT). Informer's standard split, which CAB
keeps: train on the first 12 months (8,640 rows), validate on the next 4 (2,880), test on the
next 4 (2,880), each later split's windows starting `seq_len` rows early so their first forecast
begins at the split's first row. Every column is standardised with the mean and standard
deviation of the training rows only; MSE and MAE are reported on that standardised scale, over
every window of the test split (Informer's loader drops the last partial batch; we do not).
Validation (early stopping, the best checkpoint) reads every `validation_stride`-th validation window.
`features`: `M` forecasts all 7 series from all 7, `S` only OT from OT.

Model, Informer's shape without its distilling convolutions and ProbSparse (the attention is the
thing under test): an encoder reads the `seq_len` input window; the decoder reads the last
`label_len` input steps followed by `pred_len` zeros ("start token", Informer §3.3) and emits the
whole horizon in one pass. Embeddings: values by a circular 3-tap convolution, sinusoidal
positions, and calendar features (hour, weekday, day of month, day of year, scaled to [-0.5, 0.5],
Informer's `timeF`). Roles: encoder self = noncausal_self, decoder self = causal_self (Informer
masks it), decoder -> encoder = noncausal_cross (the horizon comes out at once).

Baselines beside every result, on the same test windows (CAB's "benefit of attention" check):
repeating the last observed value, and a linear map from the window to the horizon, shared by all
series, fitted by least squares on the training windows (the "Linear" of Zeng et al., AAAI 2023).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import init_weights
from cab.data import data_dir as resolve_data_dir
from cab.data import load_csv_columns
from cab.task import MetricInfo, ParamError, batch_indices

from ._seq import Decoder, Encoder, sinusoidal_positions

DATASETS = ("ETTh1", "ETTh2")
MONTH = 30 * 24  # hours, as Informer counts
SPLIT_MONTHS = (12, 4, 4)  # train, validation, test
TARGET = "OT"


def split_borders(seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) that each split's windows are cut from (Informer's Dataset_ETT_hour)."""
    a, b = SPLIT_MONTHS[0] * MONTH, sum(SPLIT_MONTHS[:2]) * MONTH
    c = sum(SPLIT_MONTHS) * MONTH
    return {"train": (0, a), "val": (a - seq_len, b), "test": (b - seq_len, c)}


def time_features(dates: list) -> torch.Tensor:
    """(N, 4) Informer `timeF` for hourly data: hour, weekday, day of month, day of year in [-0.5, 0.5]."""
    rows = []
    for d in dates:
        d = d if isinstance(d, dt.datetime) else dt.datetime.fromisoformat(str(d))
        rows.append((d.hour / 23.0 - 0.5, d.weekday() / 6.0 - 0.5, (d.day - 1) / 30.0 - 0.5,
                     (d.timetuple().tm_yday - 1) / 365.0 - 0.5))
    return torch.tensor(rows, dtype=torch.float32)


@dataclass
class Series:
    values: torch.Tensor  # (N, C) standardised with the training rows' statistics
    marks: torch.Tensor  # (N, 4) calendar features
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    columns: list[str]


def standardise(raw: torch.Tensor, train_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale every column by the mean and (population) std of the first `train_rows` rows only."""
    fit = raw[:train_rows].double()
    mean, std = fit.mean(0), fit.std(0, unbiased=False)  # sklearn's StandardScaler, as Informer uses
    return ((raw.double() - mean) / std).float(), mean.float(), std.float()


_SERIES: dict[tuple, Series] = {}


def load_series(dataset: str, features: str, data_dir: str | None = None, data_url: str | None = None,
                data_sha256: str | None = None) -> Series:
    if dataset not in DATASETS:
        raise ValueError(f"lstf: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if features not in ("M", "S"):
        raise ValueError(f"lstf: features must be 'M' (all series) or 'S' (OT only), got {features!r}")
    key = (dataset, features, None if data_url else str(resolve_data_dir(data_dir)), data_url, data_sha256)
    if key not in _SERIES:
        table = load_csv_columns(dataset, data_dir, data_url, data_sha256)
        columns = [c for c in table if c != "date"] if features == "M" else [TARGET]
        raw = torch.tensor(list(zip(*(table[c] for c in columns))), dtype=torch.float64)  # (N, C)
        values, mean, std = standardise(raw, SPLIT_MONTHS[0] * MONTH)
        _SERIES[key] = Series(values, time_features(table["date"]), mean, std, columns)
    return _SERIES[key]


def window_starts(split: tuple[int, int], seq_len: int, pred_len: int) -> torch.Tensor:
    """Start rows of every (input, horizon) window inside a split's [start, end)."""
    start, end = split
    return torch.arange(start, end - seq_len - pred_len + 1)


def gather(t: torch.Tensor, starts: torch.Tensor, offset: int, length: int) -> torch.Tensor:
    """(B, length, C) rows starts+offset .. starts+offset+length-1 of t (N, C)."""
    return t[(starts + offset)[:, None] + torch.arange(length)]


# -- baselines --------------------------------------------------------------------------------------

def repeat_last(x: torch.Tensor, pred_len: int) -> torch.Tensor:
    """x: (B, L, C) -> (B, pred_len, C), the last observed value held."""
    return x[:, -1:, :].expand(-1, pred_len, -1)


def fit_linear(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Least squares W ((L+1), H) with y[b, :, c] ≈ [x[b, :, c], 1] @ W, one map shared by the series.
    x: (B, L, C), y: (B, H, C). Normal equations in float64 with a tiny ridge for conditioning."""
    xs = x.permute(0, 2, 1).reshape(-1, x.shape[1]).double()  # (B·C, L)
    ys = y.permute(0, 2, 1).reshape(-1, y.shape[1]).double()  # (B·C, H)
    xs = torch.cat([xs, torch.ones(xs.shape[0], 1, dtype=xs.dtype)], dim=1)
    gram = xs.T @ xs
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(gram, xs.T @ ys)


def apply_linear(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    xs = x.permute(0, 2, 1).double()  # (B, C, L)
    out = xs @ weights[:-1] + weights[-1]  # (B, C, H)
    return out.permute(0, 2, 1).float()


def mse_mae(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    err = pred.double() - true.double()
    return float((err**2).mean()), float(err.abs().mean())


# -- model ------------------------------------------------------------------------------------------

class SeriesEmbedding(nn.Module):
    """Informer's DataEmbedding: value (circular conv, k=3) + sinusoidal position + calendar features."""

    def __init__(self, channels: int, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.value = nn.Conv1d(channels, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        self.calendar = nn.Linear(4, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
        v = self.value(x.transpose(1, 2)).transpose(1, 2)  # (B, L, C) -> (B, L, d)
        return self.dropout(v + sinusoidal_positions(x.shape[1], v.shape[-1], x.device) + self.calendar(marks))


class InformerLike(nn.Module):
    def __init__(self, attention, channels: int, pred_len: int, d_model: int, num_heads: int, enc_layers: int,
                 dec_layers: int, mlp_ratio: int = 4, dropout: float = 0.05):
        super().__init__()
        self.pred_len = pred_len
        self.enc_embed = SeriesEmbedding(channels, d_model, dropout)
        self.dec_embed = SeriesEmbedding(channels, d_model, dropout)
        self.encoder = Encoder(attention, d_model, num_heads, enc_layers, mlp_ratio, dropout)
        self.decoder = Decoder(attention, d_model, num_heads, dec_layers, Pattern.NONCAUSAL_CROSS, mlp_ratio, dropout)
        self.head = nn.Linear(d_model, channels)
        init_weights(self)

    def forward(self, x, x_marks, dec, dec_marks) -> torch.Tensor:
        memory = self.encoder(self.enc_embed(x, x_marks))  # (B, seq_len, d)
        out = self.head(self.decoder(self.dec_embed(dec, dec_marks), memory))  # (B, label_len+pred_len, C)
        return out[:, -self.pred_len :]  # (B, pred_len, C)


@register_task("lstf", patterns=[Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_CROSS])
class ForecastTask(Task):
    """Informer-style forecasting on ETTh1/ETTh2: MSE and MAE on the standardised test split."""

    primary_metric = "mse"
    metric_info = {
        "mse": MetricInfo(False, "mean squared error over the test windows, standardised scale"),
        "mae": MetricInfo(False, "mean absolute error over the test windows, standardised scale"),
    }
    param_constraints = {"dataset": {"choices": list(DATASETS)}, "features": {"choices": ["M", "S"]},
                         "pred_len": {"ge": 1}, "validation_stride": {"ge": 1}}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params["label_len"] > params["seq_len"]:  # the decoder starts from the window's last label_len steps
            raise ParamError("label_len", f"must be <= seq_len ({params['seq_len']})")

    def __init__(self, pattern: Pattern, seed: int, dataset: str = "ETTh1", features: str = "M", seq_len: int = 96,
                 label_len: int = 48, pred_len: int = 96, d_model: int = 64, num_heads: int = 4, enc_layers: int = 2,
                 dec_layers: int = 1, mlp_ratio: int = 4, dropout: float = 0.05, eval_batch_size: int = 256,
                 validation_stride: int = 1, data_dir: str | None = None, data_url: str | None = None,
                 data_sha256: str | None = None, **extra: Any):
        super().__init__(pattern, seed, seq_len=seq_len)
        if extra:
            raise ValueError(f"lstf: unknown parameters {sorted(extra)}")
        if not 0 <= label_len <= seq_len:
            raise ValueError(f"lstf: label_len ({label_len}) must be within 0 .. seq_len ({seq_len})")
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.d_model, self.num_heads, self.enc_layers, self.dec_layers = d_model, num_heads, enc_layers, dec_layers
        self.mlp_ratio, self.dropout, self.eval_batch_size = mlp_ratio, dropout, eval_batch_size
        if validation_stride < 1:
            raise ValueError(f"lstf: validation_stride ({validation_stride}) must be >= 1")
        self.validation_stride = validation_stride
        self.series = load_series(dataset, features, data_dir, data_url, data_sha256)
        borders = split_borders(seq_len)
        self.starts = {name: window_starts(b, seq_len, pred_len) for name, b in borders.items()}

    # -- windows ------------------------------------------------------------------------------------
    def windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Model inputs and target for windows starting at `starts`:
        x (B, seq_len, C), x_marks (B, seq_len, 4), dec (B, label_len+pred_len, C) with the horizon
        zeroed, dec_marks (B, label_len+pred_len, 4), y (B, pred_len, C)."""
        s, lab, h = self.seq_len, self.label_len, self.pred_len
        values, marks = self.series.values, self.series.marks
        x, x_marks = gather(values, starts, 0, s), gather(marks, starts, 0, s)
        y = gather(values, starts, s, h)
        dec = torch.cat([x[:, s - lab :], torch.zeros_like(y)], dim=1)  # Informer's start token + zeros
        dec_marks = gather(marks, starts, s - lab, lab + h)  # calendar of the horizon is known
        return x, x_marks, dec, dec_marks, y

    def build_model(self, attention) -> nn.Module:
        return InformerLike(attention, len(self.series.columns), self.pred_len, self.d_model, self.num_heads,
                            self.enc_layers, self.dec_layers, self.mlp_ratio, self.dropout)

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch over every training window in a seeded order (the last partial batch dropped)."""
        train_starts = self.starts["train"]
        for idx in batch_indices(len(train_starts), batch_size, self.epoch_generator()):
            yield self.windows(train_starts[idx])

    def forward(self, model, batch):
        x, x_marks, dec, dec_marks, _ = batch
        return model(x, x_marks, dec, dec_marks)

    def loss(self, outputs, batch):
        return F.mse_loss(outputs, batch[-1])

    def tokens(self, batch) -> int:
        x, _, dec, _, _ = batch
        return x.shape[0] * (x.shape[1] + dec.shape[1])

    def example_batch(self):
        return self.windows(self.starts["test"][:1])

    def attention_lengths(self):
        s, t = self.seq_len, self.label_len + self.pred_len
        return {Pattern.NONCAUSAL_SELF: (s, s), Pattern.CAUSAL_SELF: (t, t), Pattern.NONCAUSAL_CROSS: (t, s)}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        return self._score(model, self.starts["test"])

    def has_validation(self) -> bool:
        return True  # Informer's 4 validation months, between train and test

    @torch.no_grad()
    def validate(self, model) -> dict[str, float]:
        """MSE/MAE on every `validation_stride`-th validation window (1: all, as Informer). Neighbouring
        windows share all but one of their hours, so a stride keeps the signal that early stopping and
        the best checkpoint are chosen by, at a fraction of the passes; the test split is always whole."""
        return self._score(model, self.starts["val"][:: self.validation_stride])

    def _score(self, model, starts: torch.Tensor) -> dict[str, float]:
        device = next(model.parameters()).device
        sq, ab, count = 0.0, 0.0, 0
        for i in range(0, len(starts), self.eval_batch_size):
            *inputs, y = (t.to(device) for t in self.windows(starts[i : i + self.eval_batch_size]))
            err = (model(*inputs) - y).double()
            sq += float((err**2).sum())
            ab += float(err.abs().sum())
            count += err.numel()
        return {"mse": sq / count, "mae": ab / count}

    def reference_metrics(self) -> dict[str, float]:
        x, *_, y = self.windows(self.starts["test"])
        train_x, *_, train_y = self.windows(self.starts["train"])
        last_mse, last_mae = mse_mae(repeat_last(x, self.pred_len), y)
        lin_mse, lin_mae = mse_mae(apply_linear(fit_linear(train_x, train_y), x), y)
        return {"mse_repeat_last": last_mse, "mae_repeat_last": last_mae, "mse_linear": lin_mse, "mae_linear": lin_mae}
