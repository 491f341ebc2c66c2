"""`cab bench` with `distributed.strategy` set: one attention layer across a group of processes.

    cab bench attention=softmax pattern=causal_self distributed.strategy=ring distributed.world_size=4
    torchrun --nnodes 2 --nproc-per-node 8 ... --no-python cab bench ... distributed.world_size=16

A point (attention × pattern × length × direction) is measured by every rank of a group, each on
its own contiguous slice of the sequence (cab/distributed). On one machine without a launcher, every
point gets a fresh group of `world_size` processes (127.0.0.1, gloo on CPU), as a one-process point
gets a fresh process: each rank's peak memory is its own, and an `oom` or a crash of one rank ends
the point (the others are stopped). Under torchrun the launcher's group measures every point.

Each rank, in lockstep (every call is collective):
1. one call with the bytes it sends counted (cab/distributed/comm.py; on one machine the loopback
   interface's byte counter is read around the same call, the wire's count for all ranks together);
2. peak memory of one call, as in one process (cab/bench/measure.py: VmHWM reset on CPU, the CUDA
   allocator's peak on GPUs), per rank;
3. warm-up, then timed calls, each started after a barrier; a sample is the slowest rank's time
   (the step ends when the last rank does), and the ranks stop repeating together.

The point keeps the standard fields (`peak_memory_bytes`: the largest rank's; `time_median_s`: of the
slowest-rank samples; `flops`: the whole layer's) and adds the per-rank memory, the bytes each rank
sent against the strategy's formula (cab/distributed/cost.py) and the loopback bytes. The record's
`efficiency` says `world_size`, `strategy` and, under `distributed`, how it ran (backend, launcher,
`oversubscribed` when world_size × threads exceeds the machine's cores: timings are then shared-core
timings, and memory and bytes are the figures to trust).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cab.distributed.config import strategy_of

POINT_EXTRA = ("world_size", "strategy", "peak_memory_bytes_per_rank", "time_median_s_per_rank",
               "bytes_sent_per_rank", "bytes_formula", "loopback_bytes_per_process")
LOOPBACK_TX = "/sys/class/net/lo/statistics/tx_bytes"


def _node(config: dict[str, Any]) -> dict[str, Any]:
    return dict(config.get("distributed") or {})


def is_distributed(config: dict[str, Any]) -> bool:
    return bool(strategy_of(config))


def launcher_name() -> str:
    from cab.distributed.group import launched

    return "torchrun (the launcher's group)" if launched() else "local: a fresh group per point, 127.0.0.1"


def efficiency_fields(config: dict[str, Any]) -> dict[str, Any]:
    """What a distributed efficiency record adds to its `efficiency` object (nothing for one process)."""
    if not is_distributed(config):
        return {}
    node = _node(config)
    size = int(node.get("world_size", 1))
    threads = int(config.get("threads") or 1)
    cores = os.cpu_count() or 1
    device = str(config.get("device") or "auto")
    from cab.distributed.group import backend_for

    return {
        "world_size": size,
        "strategy": node["strategy"],
        "distributed": {
            "backend": backend_for("cuda" if device.startswith("cuda") else "cpu", node.get("backend", "auto")),
            "launcher": launcher_name(),
            "query_chunk": node.get("query_chunk"),
            "oversubscribed": (not device.startswith("cuda")) and size * threads > cores,
            "cores": cores,
            "memory": "per process: peak_memory_bytes is the largest rank's (each rank's in "
                      "peak_memory_bytes_per_rank)",
            "time": "a sample is the slowest rank's time for one collective call, each call started after a barrier",
            "bytes": "bytes_sent_per_rank: what each rank handed to the transport for one call "
                     "(cab/distributed/comm.py), "
                     "bytes_formula: cab/distributed/cost.py; loopback_bytes_per_process: the loopback interface's "
                     "transmitted bytes around the same call divided by world_size (TCP/IP headers and any other "
                     "traffic on the interface included; one machine only)",
        },
    }


# ---------------------------------------------------------------------------------------------
# one point: the group


def measure(config: dict[str, Any], attention: str, hparams: dict, pattern: str, length: int, direction: str) -> dict:
    """One distributed point, as configured: a fresh local group, or the launcher's."""
    from cab.bench.job import resolve_device
    from cab.distributed.group import launched

    node = _node(config)
    size = int(node.get("world_size", 1))
    args = dict(
        attention=attention, pattern=pattern, length=length, batch=int(config["batch"]), dim=int(config["dim"]),
        num_heads=int(config["num_heads"]), device=resolve_device(config), warmup=int(config["warmup"]),
        repeats=int(config["repeats"]), min_repeats=int(config.get("min_repeats", 3)),
        max_seconds=config.get("max_seconds_per_point"), backward=direction == "forward_backward",
        hparams=hparams, dtype=str(config.get("dtype", "float32")), threads=config.get("threads"),
        seed=int(config.get("seed", 0)), imports=list(config.get("imports") or []), strategy=node["strategy"],
        backend=node.get("backend", "auto"), query_chunk=node.get("query_chunk"), world_size=size,
        timeout_s=float(config.get("point_timeout_s") or 900), local=not launched(),
    )
    if launched():
        import torch.distributed as dist

        mine = measure_rank(args)
        per_rank: list = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, mine)
        return combine(per_rank, args)
    limit = config.get("memory_limit_gb")
    return combine(_spawn(args, size, args["timeout_s"], int(float(limit) * 2**30) if limit else None), args)


def _spawn(args: dict, size: int, timeout_s: float, memory_limit_bytes: int | None) -> list[dict]:
    """Run `measure_rank` in `size` fresh processes (one group on 127.0.0.1) -> their results, rank order.
    A rank that dies, runs out of memory or fails stops the others; the point gets its status."""
    from cab.bench.measure import _limit_memory
    from cab.distributed.group import free_port, local_env

    code = "from cab.bench.distributed import worker_main; worker_main()"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cab-bench-dist-") as tmp:
        procs, outs = [], []
        for rank in range(size):
            out = Path(tmp, f"rank{rank}.out")
            err = Path(tmp, f"rank{rank}.err")
            outs.append((out, err))
            procs.append(subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(args)], stdout=out.open("w"), stderr=err.open("w"),
                env={**os.environ, **local_env(rank, size, port)}, preexec_fn=_limit_memory(memory_limit_bytes)))
        deadline = time.time() + timeout_s
        results: list[dict | None] = [None] * size
        failure = None
        while failure is None and any(r is None for r in results):
            for rank, proc in enumerate(procs):
                if results[rank] is not None or proc.poll() is None:
                    continue
                results[rank] = _read(rank, proc.returncode, *outs[rank])
                if results[rank]["status"] != "ok":
                    failure = results[rank]
            if failure is None and time.time() > deadline:
                failure = {"rank": None, "status": "timeout", "error": f"over {timeout_s:g} s"}
            time.sleep(0.05)
        for proc in procs:  # the others wait in a collective that will never complete
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if failure is not None:
            return [failure]
        return results  # type: ignore[return-value]


def _read(rank: int, returncode: int, out: Path, err: Path) -> dict:
    lines = out.read_text().strip().splitlines()
    if returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (err.read_text().strip().splitlines() or [""])[-1]
    status = "oom" if returncode in (-9, 137) or "MemoryError" in tail or "can't allocate memory" in tail else "failed"
    return {"rank": rank, "status": status, "error": f"rank {rank} exit {returncode}: {tail}"[:500]}


def worker_main() -> None:
    """Entry point of a spawned rank: measure, print one JSON line, and leave without tearing the group
    down (a rank that failed would wait for the others there)."""
    result = measure_rank(json.loads(sys.argv[1]))
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------------------------------------
# one point: one rank


def _loopback_bytes() -> int | None:
    try:
        return int(Path(LOOPBACK_TX).read_text())
    except (OSError, ValueError):
        return None


def measure_rank(args: dict) -> dict:
    """This rank's share of one point (see the module docstring); never raises."""
    import torch
    import torch.distributed as dist

    from cab.bench.measure import cpu_peak_memory, cuda_peak_memory, held_heap, make_inputs, step_call
    from cab.distributed.comm import counting
    from cab.distributed.group import backend_for, device_for, init_from_env
    from cab.distributed.layer import SequenceParallel
    from cab.patterns import Pattern
    from cab.registry import build_attention, import_modules, with_length_bound
    from cab.results.status import classify

    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    device = device_for(args["device"])
    init_from_env(backend_for(device, args["backend"]), timeout_s=args["timeout_s"])
    rank, size = dist.get_rank(), dist.get_world_size()
    result: dict[str, Any] = {"rank": rank, "status": "ok", "error": None}
    try:
        import_modules(args["imports"])
        pattern = Pattern.parse(args["pattern"])
        length, batch, dim = int(args["length"]), int(args["batch"]), int(args["dim"])
        dtype = getattr(torch, args["dtype"])
        backward = bool(args["backward"])
        torch.manual_seed(args["seed"])  # the same weights on every rank
        layer = build_attention(args["attention"], dim=dim, num_heads=int(args["num_heads"]), pattern=pattern,
                                **with_length_bound(args["attention"], args["hparams"] or {}, length))
        layer = layer.to(device=device, dtype=dtype).train(backward)
        result["flops"] = int(layer.flops(batch, length, length))
        sp = SequenceParallel(layer, args["strategy"], query_chunk=args["query_chunk"])
        x, context = make_inputs(pattern, batch, length // size, dim, device, dtype, args["seed"] * 1009 + rank)
        call = step_call(sp, layer, x, context, backward)

        def sync():
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)

        # 1. bytes of one call (also the warm-up of the memory measurement)
        dist.barrier()
        wire_before = _loopback_bytes() if args["local"] and rank == 0 else None
        with counting() as sent:
            call()
        sync()
        dist.barrier()
        if wire_before is not None and _loopback_bytes() is not None:
            result["loopback_bytes"] = _loopback_bytes() - wire_before
        result["bytes_sent"] = sent.total
        result["bytes_sent_by_collective"] = sent.as_dict()
        # 2. peak memory of one call, this rank's own
        if device.startswith("cuda"):
            result["peak_memory_bytes"], result["memory_method"] = cuda_peak_memory(call, device)
        else:
            result["peak_memory_bytes"], result["memory_method"] = cpu_peak_memory(call, warm_first=False)
        # 3. time: every sample starts after a barrier; the ranks stop together
        with held_heap(device) as result["time_method"]:
            for _ in range(max(1, int(args["warmup"]) - 1)):  # the calls above did not warm the held heap
                call()
            samples: list[float] = []
            for _ in range(int(args["repeats"])):
                dist.barrier()
                sync()
                start = time.perf_counter()
                call()
                sync()
                samples.append(time.perf_counter() - start)
                spent = torch.tensor([sum(samples)], dtype=torch.float64, device=device)
                dist.all_reduce(spent, op=dist.ReduceOp.MAX)
                if args["max_seconds"] and float(spent) >= float(args["max_seconds"]) \
                        and len(samples) >= int(args["min_repeats"]):
                    break
        result["samples"] = samples
    except Exception as exc:  # noqa: BLE001 - a failed point is recorded, the sweep goes on
        result["status"] = classify(exc)
        result["error"] = f"rank {rank}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    return result


def combine(per_rank: list[dict], args: dict) -> dict:
    """The point from every rank's share (or from the one failure that ended it)."""
    from cab.bench.measure import median_iqr

    size = int(args["world_size"])
    point: dict[str, Any] = {"attention": args["attention"], "pattern": args["pattern"], "length": args["length"],
                             "status": "ok", "error": None, "world_size": size, "strategy": args["strategy"]}
    bad = next((r for r in per_rank if r.get("status") != "ok"), None)
    if bad is not None:
        point.update(status=bad["status"], error=bad.get("error"))
        return point
    slowest = [max(r["samples"][i] for r in per_rank) for i in range(min(len(r["samples"]) for r in per_rank))]
    point["time_median_s"], point["time_iqr_s"] = median_iqr(slowest)
    point["repeats"] = len(slowest)
    point["time_median_s_per_rank"] = [median_iqr(r["samples"])[0] for r in per_rank]
    point["peak_memory_bytes_per_rank"] = [r["peak_memory_bytes"] for r in per_rank]
    point["peak_memory_bytes"] = max(point["peak_memory_bytes_per_rank"])
    point["flops"] = per_rank[0]["flops"]
    point["memory_method"], point["time_method"] = per_rank[0]["memory_method"], per_rank[0]["time_method"]
    point["bytes_sent_per_rank"] = [r["bytes_sent"] for r in per_rank]
    wire = per_rank[0].get("loopback_bytes")
    point["loopback_bytes_per_process"] = None if wire is None else round(wire / size)
    point["bytes_formula"] = _formula(args)
    return point


def _formula(args: dict) -> int | None:
    """The strategy's bytes per process for one call (forward, or forward + backward), cab/distributed/cost.py."""
    from cab.distributed.cost import bytes_per_process
    from cab.registry import build_attention, with_length_bound

    try:
        layer = build_attention(args["attention"], dim=int(args["dim"]), num_heads=int(args["num_heads"]),
                                pattern=args["pattern"], **with_length_bound(args["attention"], args["hparams"] or {},
                                                                             int(args["length"])))
    except Exception:  # noqa: BLE001 - the point itself says what failed
        return None
    import torch

    e = torch.tensor([], dtype=getattr(torch, args["dtype"])).element_size()
    common = dict(strategy=args["strategy"], name=args["attention"], layer=layer, batch=int(args["batch"]),
                  len_q=int(args["length"]), len_k=int(args["length"]), world_size=int(args["world_size"]),
                  element_bytes=e, padded=False)
    total = bytes_per_process(**common)
    if args["backward"]:
        total += bytes_per_process(**common, backward=True)
    return total
