"""Process groups: joining the one a launcher started, or starting one on this machine.

- Under `torchrun` (one node or many) the launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
  MASTER_PORT; `init_from_env` joins that group (env://), so `torchrun ... --no-python cab bench ...`
  and SLURM's `srun torchrun ...` need nothing else.
- On one machine without a launcher (tests, `cab bench` points), `local_env(rank, world_size, port)`
  gives a process the same variables for 127.0.0.1, and gloo is pointed at the loopback interface,
  so nothing leaves the machine.

Backends: gloo on CPU, NCCL on CUDA ("auto" picks by device); no other transport.
"""

from __future__ import annotations

import datetime
import os
import socket

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True when a launcher (torchrun, or `local_env`) has set this process's rank and world size."""
    return all(v in os.environ for v in LAUNCHER_VARS)


def launched_world_size() -> int | None:
    return int(os.environ["WORLD_SIZE"]) if launched() else None


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def writes_results() -> bool:
    """Whether this process writes records: rank 0 of a launched group, or any process outside one."""
    return not launched() or launched_rank() == 0


def backend_for(device: str, backend: str = "auto") -> str:
    if backend != "auto":
        return backend
    return "nccl" if str(device).startswith("cuda") else "gloo"


def device_for(device: str) -> str:
    """This rank's device: cuda -> cuda:LOCAL_RANK (one GPU per process), anything else as it is."""
    if str(device) == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return str(device)


def init_from_env(backend: str = "gloo", timeout_s: float | None = None) -> None:
    """Join the group described by the launcher's environment variables (once per process)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    kwargs = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    if backend == "nccl":
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, init_method="env://", **kwargs)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for this machine's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_name() -> str | None:
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return next((n for n in ("lo", "lo0") if n in names), None)


def local_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The launcher variables of rank `rank` of a group on this machine (127.0.0.1, loopback only)."""
    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
           "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    lo = _loopback_name()
    if lo and "GLOO_SOCKET_IFNAME" not in os.environ:
        env["GLOO_SOCKET_IFNAME"] = lo
    return env


def destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def training_layer(layer, node: dict, device: str):
    """The attention layer under test of a training cell, run sequence-parallel by `node` (the config's
    `distributed`): the launcher's group is joined (none is needed for world_size 1), and the layer takes
    and returns the whole sequence on every rank while it runs across them ("replicated" inputs): the
    rest of the backbone runs replicated, so only this layer's work and memory are split."""
    from .layer import SequenceParallel

    if launched():
        init_from_env(backend_for(device, node.get("backend") or "auto"))
    return SequenceParallel(layer, node["strategy"], inputs="replicated", query_chunk=node.get("query_chunk"))
