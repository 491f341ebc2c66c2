"""Equivalence check: a distributed layer against the same layer in one process, in float64.

`run_cases(cases, world_size)` starts one group of `world_size` processes on this machine
(torch.multiprocessing, forked from a clean server process; gloo on 127.0.0.1), runs every case inside
it, and returns per case the largest relative differences of the output, the input gradients and the parameter gradients:

    reference:    y = layer(x, context, key_padding_mask) on the whole sequence, in every process
    distributed:  y_r = SequenceParallel(layer, strategy)(x_r, context_r, key_padding_mask_r)
    compared:     y_r against y's slice r; ∂(w·y)/∂x_r and ∂/∂context_r against the slices of the
                  reference gradients; Σ_ranks ∂/∂θ against ∂/∂θ for every parameter θ

Inputs have padding that differs per row and does not fall on slice boundaries. One group serves many
cases, so spawning costs once per world size (tests/test_distributed.py uses it that way).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class Case:
    attention: str
    strategy: str
    pattern: str
    hparams: tuple = ()  # ((name, value), ...): hashable
    batch: int = 2
    length: int = 32  # Lq (and Lk for self patterns); divisible by the world size
    source_length: int = 48  # Lk for cross patterns
    dim: int = 32
    num_heads: int = 4
    seed: int = 0
    inputs: str = "sharded"  # or "replicated": the whole sequence in and out on every rank (the training cell's form)
    query_chunk: int | None = None  # ring: queries per block product

    @property
    def id(self) -> str:
        """attention-strategy-pattern[hyperparameters and sizes that differ from the defaults]."""
        sizes = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)[4:] if getattr(self, f.name) != f.default]
        extra = ",".join([f"{k}={v}" for k, v in self.hparams] + sizes)
        return f"{self.attention}-{self.strategy}-{self.pattern}" + (f"[{extra}]" if extra else "")


@dataclass
class Outcome:
    ok: bool
    output: float | None = None  # max |distributed - reference| / max(1, max |reference|)
    input_grad: float | None = None
    param_grad: float | None = None
    error: str | None = None
    ranks: list = field(default_factory=list)  # per rank: the differences and the bytes it sent (forward, backward)


def _rel(a, b) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max()))) if b.numel() else 0.0


def _inputs(case: Case, device="cpu"):
    import torch

    from cab.patterns import Pattern

    g = torch.Generator().manual_seed(case.seed + 1)
    cross = Pattern.parse(case.pattern).is_cross
    len_k = case.source_length if cross else case.length
    x = torch.randn(case.batch, case.length, case.dim, generator=g, dtype=torch.float64)
    context = torch.randn(case.batch, len_k, case.dim, generator=g, dtype=torch.float64) if cross else None
    mask = torch.zeros(case.batch, len_k, dtype=torch.bool)  # right padding, a different amount per row
    for b in range(case.batch):
        mask[b, len_k - (5 + 6 * b) % (len_k // 2):] = True
    weight = torch.randn(case.batch, case.length, case.dim, generator=g, dtype=torch.float64)  # loss = Σ w·y
    return x, context, mask, weight


def check_case(case: Case, group=None) -> dict:
    """Run one case on this rank (inside an initialised group) -> its differences (this rank's slice)."""
    import torch
    import torch.distributed as dist

    from cab.registry import build_attention, with_length_bound

    from .comm import counting
    from .layer import SequenceParallel, shard

    torch.manual_seed(case.seed)  # every rank builds the same weights
    hparams = with_length_bound(case.attention, dict(case.hparams), max(case.length, case.source_length))
    layer = build_attention(case.attention, dim=case.dim, num_heads=case.num_heads, pattern=case.pattern, **hparams)
    layer = layer.to(torch.float64).eval()
    params = [p for p in layer.parameters() if p.requires_grad]
    x, context, mask, weight = _inputs(case)
    leaves = [x.requires_grad_(True)] + ([context.requires_grad_(True)] if context is not None else [])

    y = layer(x, context=context, key_padding_mask=mask)
    ref = torch.autograd.grad((y * weight).sum(), leaves + params, allow_unused=True)

    part = (lambda t: t) if case.inputs == "replicated" else (lambda t: shard(t, 1, group))  # what a rank holds
    xs = part(x.detach()).clone().requires_grad_(True)
    cs = None if context is None else part(context.detach()).clone().requires_grad_(True)
    sp = SequenceParallel(layer, case.strategy, group, inputs=case.inputs, query_chunk=case.query_chunk)
    with counting() as sent_forward:
        ys = sp(xs, context=cs, key_padding_mask=part(mask))
    with counting() as sent_backward:
        got = torch.autograd.grad((ys * part(weight)).sum(),
                                  [xs] + ([cs] if cs is not None else []) + params, allow_unused=True)
    n_in = len(leaves)
    totals = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(got[n_in:], params)])
    if dist.is_initialized():
        dist.all_reduce(totals, group=group)  # Σ over ranks (each covers its own slice), one call for all
    param_errs, start = [], 0
    for g_ref, p in zip(ref[n_in:], params):
        total = totals[start:start + p.numel()].view_as(p)
        start += p.numel()
        param_errs.append(_rel(total, torch.zeros_like(p) if g_ref is None else g_ref))
    input_errs = [_rel(g, part(r)) for g, r in zip(got[:n_in], ref[:n_in])]
    return {"output": _rel(ys.detach(), part(y.detach())), "input_grad": max(input_errs),
            "param_grad": max(param_errs, default=0.0), "bytes_forward": sent_forward.total,
            "bytes_backward": sent_backward.total}


def _worker(rank: int, world_size: int, port: int, cases: list[dict], out_dir: str) -> None:
    import torch

    from . import group as groups

    os.environ.update(groups.local_env(rank, world_size, port))
    torch.set_num_threads(1)
    groups.init_from_env("gloo", timeout_s=120)
    results = {}
    for raw in cases:
        case = Case(**{**raw, "hparams": tuple(tuple(kv) for kv in raw["hparams"])})
        try:
            results[case.id] = check_case(case)
        except Exception as exc:  # noqa: BLE001 - reported per case; the same on every rank, so no rank hangs
            results[case.id] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    groups.destroy()


def run_cases(cases: list[Case], world_size: int, tolerance: float = 1e-9,
              timeout_s: float = 600) -> dict[str, Outcome]:
    """Every case in one group of `world_size` spawned processes -> {case.id: Outcome}."""
    import multiprocessing

    import torch.multiprocessing as mp

    from .group import free_port

    # forkserver: one clean server process imports torch and cab once, and every rank forks from it (a
    # plain spawn would import them again in each process: seconds each on a busy 2-core machine)
    multiprocessing.set_forkserver_preload(["torch", "cab.distributed.check", "cab.distributed.layer"])
    with tempfile.TemporaryDirectory(prefix="cab-dist-check-") as out_dir:
        raw = [{**asdict(c), "hparams": [list(kv) for kv in c.hparams]} for c in cases]
        ctx = mp.start_processes(_worker, args=(world_size, free_port(), raw, out_dir), nprocs=world_size,
                                 join=False, start_method="forkserver")
        deadline = time.time() + timeout_s
        while not ctx.join(timeout=1.0):
            if time.time() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"the group of {world_size} did not finish its {len(cases)} cases "
                                   f"in {timeout_s:g} s")
        per_rank = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world_size)]
    outcomes = {}
    for case in cases:
        got = [r[case.id] for r in per_rank]
        errors = [g for g in got if "error" in g]
        if errors:
            message = errors[0]["error"] + "\n" + errors[0].get("traceback", "")
            outcomes[case.id] = Outcome(False, error=message, ranks=got)
            continue
        worst = {k: max(g[k] for g in got) for k in ("output", "input_grad", "param_grad")}
        outcomes[case.id] = Outcome(all(v <= tolerance for v in worst.values()), ranks=got, **worst)
    return outcomes
