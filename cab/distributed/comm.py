"""The collectives the strategies talk through: differentiable, counted, on `torch.distributed`.

Every byte a strategy moves goes through this module, for two reasons:

1. gradients flow. Each differentiable collective is an autograd Function whose backward does the
   reverse communication:

       ring_shift(*ts, step)       send to rank+step, receive from rank-step      backward: shift by -step
       all_to_all(t, split, cat)   split dim `split` over the ranks, concatenate   backward: all_to_all(cat, split)
                                   what arrives on dim `cat` (Ulysses)
       all_gather(t)               (P, *t.shape): every rank's t                  backward: reduce-scatter (sum)
       all_reduce_sum(t)           Σ_ranks t on every rank                        backward: all_reduce_sum(grad)

   and `gather_constant` / `all_reduce_max_constant` move what carries no gradient (padding masks,
   stabilisers). A collective in a backward pass must be entered by every rank, so a strategy must
   build the same graph on every rank (every gathered value used, if only with weight 0).
2. bytes are counted in one place (`traffic`), so `cab bench` can record them against each
   strategy's formula (cab/distributed/cost.py). The count is what this process sends under the
   bandwidth-optimal algorithm of each collective, from the tensors' sizes:

       shift: n    all_to_all: n·(P-1)/P    all_gather: n·(P-1)    all_reduce: 2·n·(P-1)/P    (n bytes given)

   which is what NCCL's ring algorithms send; gloo's may send more (the bench also reads the
   loopback interface's byte counter, the wire's truth on one machine).

`group=None` is the default (world) group. Masks travel as uint8 (gloo has no bool reductions).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.autograd import Function


# ---------------------------------------------------------------------------------------------
# the group


def world(group=None) -> tuple[int, int]:
    """(rank, size) of this process in `group`; (0, 1) when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _global_rank(group, group_rank: int) -> int:
    return group_rank if group is None else dist.get_global_rank(group, group_rank)


# ---------------------------------------------------------------------------------------------
# bytes sent


@dataclass
class Traffic:
    """Bytes this process has sent through this module, by collective, forward and backward alike."""

    shift: int = 0
    all_to_all: int = 0
    all_gather: int = 0
    all_reduce: int = 0
    calls: int = 0

    @property
    def total(self) -> int:
        return self.shift + self.all_to_all + self.all_gather + self.all_reduce

    def as_dict(self) -> dict[str, int]:
        return {"shift": self.shift, "all_to_all": self.all_to_all, "all_gather": self.all_gather,
                "all_reduce": self.all_reduce, "total": self.total, "calls": self.calls}


traffic = Traffic()


def _count(kind: str, nbytes: float) -> None:
    setattr(traffic, kind, getattr(traffic, kind) + int(round(nbytes)))
    traffic.calls += 1


@contextmanager
def counting():
    """Count from zero inside the block: `with counting() as t: ...; t.total`."""
    global traffic
    saved, traffic = traffic, Traffic()
    try:
        yield traffic
    finally:
        traffic = saved


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ---------------------------------------------------------------------------------------------
# ring shift: point to point, both directions at once


class PendingShift:
    """A shift in flight (`start_shift`); `wait()` -> the received tensors."""

    def __init__(self, requests, received: list[torch.Tensor]):
        self.requests, self.received = requests, received

    def wait(self) -> list[torch.Tensor]:
        for req in self.requests:
            req.wait()
        return self.received


def start_shift(tensors: list[torch.Tensor], step: int = 1, group=None) -> PendingShift:
    """Send each tensor to rank+step and receive the same shapes from rank-step (mod P), without
    waiting: compute can run while the bytes travel. Not differentiable (see `ring_shift`)."""
    rank, size = world(group)
    if size == 1 or step % size == 0:
        return PendingShift([], [t.clone() for t in tensors])
    dst, src = _global_rank(group, (rank + step) % size), _global_rank(group, (rank - step) % size)
    ops, received = [], []
    for t in tensors:
        t = t.contiguous()
        out = torch.empty_like(t)
        ops += [dist.P2POp(dist.isend, t, dst, group), dist.P2POp(dist.irecv, out, src, group)]
        received.append(out)
        _count("shift", _nbytes(t))
    return PendingShift(dist.batch_isend_irecv(ops), received)


class _RingShift(Function):
    @staticmethod
    def forward(ctx, step, group, *tensors):
        ctx.step, ctx.group = step, group
        return tuple(start_shift(list(tensors), step, group).wait())

    @staticmethod
    def backward(ctx, *grads):  # grads are materialised (zeros where unused): every rank enters the shift
        back = start_shift(list(grads), -ctx.step, ctx.group).wait()  # each gradient goes home
        return (None, None, *back)


def ring_shift(*tensors: torch.Tensor, step: int = 1, group=None) -> tuple[torch.Tensor, ...]:
    """Differentiable shift: rank r receives rank (r-step)'s tensors; the gradient travels back."""
    return _RingShift.apply(step, group, *tensors)


# ---------------------------------------------------------------------------------------------
# all-to-all (Ulysses)


def _all_to_all(t: torch.Tensor, split_dim: int, cat_dim: int, group) -> torch.Tensor:
    rank, size = world(group)
    if size == 1:
        return t
    if t.shape[split_dim] % size:
        raise ValueError(f"all_to_all: dim {split_dim} of size {t.shape[split_dim]} does not split over {size} ranks")
    pieces = torch.stack(t.chunk(size, dim=split_dim))  # (P, ...): piece p goes to rank p
    out = torch.empty_like(pieces)
    dist.all_to_all_single(out, pieces, group=group)  # out[p]: what rank p sent me
    _count("all_to_all", _nbytes(pieces) * (size - 1) / size)
    return torch.cat(out.unbind(0), dim=cat_dim)


class _AllToAll(Function):
    @staticmethod
    def forward(ctx, t, split_dim, cat_dim, group):
        ctx.dims, ctx.group = (split_dim, cat_dim), group
        return _all_to_all(t, split_dim, cat_dim, group)

    @staticmethod
    def backward(ctx, grad):
        split_dim, cat_dim = ctx.dims
        return _all_to_all(grad.contiguous(), cat_dim, split_dim, ctx.group), None, None, None


def all_to_all(t: torch.Tensor, split_dim: int, cat_dim: int, group=None) -> torch.Tensor:
    """Split `t` into P pieces along `split_dim`, send piece p to rank p, and concatenate the P pieces
    received (in rank order) along `cat_dim`. Ulysses: (B, H, L/P, Dh) -> (B, H/P, L, Dh) with
    split_dim=1, cat_dim=2, and back with the dims swapped."""
    return _AllToAll.apply(t, split_dim, cat_dim, group)


# ---------------------------------------------------------------------------------------------
# all-gather and all-reduce


def _gather(t: torch.Tensor, group) -> torch.Tensor:
    _, size = world(group)
    if size == 1:
        return t[None]
    t = t.contiguous()
    out = t.new_empty(size * t.numel())  # flat: backends concatenate on dim 0
    gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.13
    gather_into(out, t.reshape(-1), group=group)
    _count("all_gather", _nbytes(t) * (size - 1))
    return out.view(size, *t.shape)


class _AllGather(Function):
    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        return _gather(t, group)

    @staticmethod
    def backward(ctx, grad):  # grad: (P, *shape); rank p's share is Σ_ranks grad[p]
        _, size = world(ctx.group)
        if size == 1:
            return grad[0], None
        out = grad.new_empty(grad[0].numel())
        scatter_from = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        scatter_from(out, grad.contiguous().reshape(-1), group=ctx.group)
        _count("all_gather", _nbytes(out) * (size - 1))
        return out.view(grad.shape[1:]), None


def all_gather(t: torch.Tensor, group=None) -> torch.Tensor:
    """(P, *t.shape): every rank's `t`, in rank order, on every rank; differentiable."""
    return _AllGather.apply(t, group)


def _reduce_sum(t: torch.Tensor, group) -> torch.Tensor:
    _, size = world(group)
    out = t.contiguous().clone()
    if size > 1:
        dist.all_reduce(out, group=group)
        _count("all_reduce", _nbytes(out) * 2 * (size - 1) / size)
    return out


class _AllReduceSum(Function):
    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        return _reduce_sum(t, group)

    @staticmethod
    def backward(ctx, grad):  # every rank's output depends on every rank's input
        return _reduce_sum(grad, ctx.group), None


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """Σ over ranks of `t`, on every rank; differentiable."""
    return _AllReduceSum.apply(t, group)


# ---------------------------------------------------------------------------------------------
# constants: no gradient


def gather_constant(t: torch.Tensor | None, group=None) -> torch.Tensor | None:
    """(P, *t.shape) of a tensor that carries no gradient (bool masks travel as uint8); None stays None."""
    if t is None:
        return None
    if t.dtype is torch.bool:
        return _gather(t.to(torch.uint8), group).bool()
    return _gather(t.detach(), group)


def all_reduce_max_constant(t: torch.Tensor, group=None) -> torch.Tensor:
    """Elementwise max over ranks of a tensor that carries no gradient (a stabiliser)."""
    _, size = world(group)
    out = t.detach().contiguous().clone()
    if size > 1:
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=group)
        _count("all_reduce", _nbytes(out) * 2 * (size - 1) / size)
    return out


def all_reduce_gradients(parameters, group=None) -> None:
    """Sum each parameter's `.grad` over the ranks, in place (after backward): the parameters are
    replicated, and each rank's gradient covers only its own slice of the sequence. Not counted in
    `traffic`: it is the data-parallel step of training, not part of the attention."""
    _, size = world(group)
    if size == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, group=group)
