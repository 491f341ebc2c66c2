"""The `distributed` node of `cab run` and `cab bench` configs, and its checks before any job starts.

    distributed.strategy     null (one process, the default) | ring | ulysses | lasp
    distributed.world_size   processes in the group (1: the strategy's code path in one process)
    distributed.backend      auto (gloo on CPU, NCCL on CUDA) | gloo | nccl
    distributed.query_chunk  ring: queries per block product (null: the whole block)

`cab bench` starts a fresh group of world_size processes on this machine for every point (127.0.0.1),
unless it was itself started by a launcher (torchrun), whose group it then uses. `cab run` (a training
cell) always uses the launcher's group: `torchrun --nproc-per-node N --no-python cab run ...`.
Import-light (no torch): cab/schema.py uses it while checking overrides.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

STRATEGY_NAMES = ("ring", "ulysses", "lasp")  # cab.distributed.adapters.STRATEGIES, without importing torch


class Distributed(BaseModel):
    """`distributed`: how the attention layer under test runs across processes (conf/distributed/*.yaml)."""

    model_config = ConfigDict(strict=True, extra="forbid", protected_namespaces=())
    strategy: Optional[Literal["ring", "ulysses", "lasp"]] = None
    world_size: Annotated[int, Field(ge=1)] = 1
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    query_chunk: Optional[Annotated[int, Field(ge=1)]] = None


def strategy_of(config: dict[str, Any]) -> str | None:
    node = config.get("distributed") or {}
    return node.get("strategy") if isinstance(node, dict) else None


def check_distributed(config: dict[str, Any], app: str) -> None:
    """The checks that need more than one key (ConfigError, one line). app: "run" or "bench"."""
    from cab.schema import ConfigError

    from .group import launched_world_size

    node = config.get("distributed") or {}
    strategy, size = node.get("strategy"), int(node.get("world_size", 1))
    if not strategy:
        if size > 1:
            raise ConfigError(f"distributed.world_size={size}: needs a distributed.strategy; valid: "
                              f"{', '.join(STRATEGY_NAMES)}")
        return
    from .adapters import why_not

    name = (config.get("attention") or {}).get("name")
    reason = why_not(name, strategy)
    if reason:
        from .adapters import strategies_for

        fits = ", ".join(strategies_for(name)) or "none"
        raise ConfigError(f"distributed.strategy={strategy}: {reason}; strategies for {name}: {fits}")
    device = str(config.get("device") or "auto")
    if node.get("backend") == "nccl" and device == "cpu":
        raise ConfigError("distributed.backend=nccl: NCCL needs CUDA devices, and device=cpu; expected gloo or auto")
    launched = launched_world_size()
    if launched is not None and launched != size:
        raise ConfigError(f"distributed.world_size={size}: the launcher started {launched} processes; expected "
                          f"distributed.world_size={launched}")
    if app == "run" and size > 1 and launched is None:
        raise ConfigError(f"distributed.world_size={size}: a training cell runs in a launched group; start it with "
                          f"torchrun --nproc-per-node {size} --no-python cab run ... (docs/distributed.md)")
    if app == "bench":
        heads = int(config.get("num_heads") or 0)
        if strategy == "ulysses" and heads % size:
            raise ConfigError(f"distributed.world_size={size}: ulysses scatters heads, and num_heads={heads} is not "
                              f"divisible by it; expected a divisor of {heads}")
        from cab.bench.job import resolve_lengths

        odd = [n for n in resolve_lengths(config) if n % size]
        if odd:
            raise ConfigError(f"lengths={odd}: each rank holds an equal contiguous slice; expected lengths divisible "
                              f"by distributed.world_size={size}")
