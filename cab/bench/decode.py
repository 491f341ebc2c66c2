"""`cab bench directions=[decode]`: generation, token by token, against context length.

    cab bench attention=linear pattern=causal_self directions=[decode] lengths=[1024,4096,16384]
    cab bench attention=softmax pattern=causal_self directions=[decode] decode.model=lm batch=4

A point is one context length n. The model (`decode.model`: `layer`, one attention layer at the bench's
dim and heads; `lm`, the lm task's whole model at its `decode.lm_scale` sizes, every causal layer the
mechanism) reads a random prompt of n tokens with `prefill` (the parallel form, untimed but recorded as
prefill_s), then generates `decode.warmup` untimed and `decode.tokens` timed tokens with `step`, each
timed alone (CUDA: synchronised around it). The record's point:

    time_median_s, time_iqr_s   time per generated token at context n: median and interquartile range
    cpu_time_median_s, _iqr_s   CPU only: the process's CPU seconds per token (time.process_time), which
                                waiting for a core shared with other processes does not inflate
    peak_memory_bytes           the decode state's bytes at context n (whole batch): what generation holds
                                from token to token, the KV cache or the recurrent state (the numbers
                                `state_size(n)` states per example, × batch × element size)
    state_numbers               numbers per example in the state(s) at context n (= Σ state_size(n))
    state_allocated_bytes       the state's buffers with their spare room (a growing cache doubles)
    prefill_s, flops            the prompt's prefill time; flops null (a step's work is not stated)

Inputs: `layer`, a random (B, n, dim) prompt and a fixed random token; `lm`, random ids and then the
greedy next token. The points of a job run in one worker process (CPU: a memory limit, `memory_limit_gb`,
and a time limit per point, `point_timeout_s`; a worker killed by the kernel's OOM killer gives an `oom`
point), so process start-up is paid once per job; the sweep stops at the first `oom` or `timeout`.
Exponents of time per token against context come from the same fit as forward's (`cab.bench.job`): about
0 for a constant state, 1 for a KV cache. docs/decode.md has the recorded grid.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
import time
from typing import Any

DECODE_FIELDS = ("cpu_time_median_s", "cpu_time_iqr_s", "state_numbers", "state_allocated_bytes", "prefill_s", "params")
MODELS = ("layer", "lm")
MEMORY_METHOD = "bytes of the decode state at the context length (state numbers × batch × element size)"
TIME_METHOD = "each generated token timed alone after warm-up tokens (CUDA: synchronised before and after)"
MODE = "eval, torch.no_grad(): prefill of a random prompt of `length` tokens, then one token per step"
FLOPS_CONVENTION = "not stated for decode (null): a step's work is the read of its state"


def unsupported_reason(spec, pattern) -> str | None:
    """Why this attention × pattern has no decode points, or None."""
    from cab.patterns import Pattern

    if pattern not in spec.patterns:
        return spec.unsupported[pattern]
    if pattern is not Pattern.CAUSAL_SELF:
        return "decoding is generation: it exists for causal_self only"
    if not spec.cls.declares_decode():
        return spec.cls.decode_unsupported or "the mechanism declares no decode form"
    return None


def _lm_params(scale: str) -> dict[str, Any]:
    """The lm task's sizes at a scale preset (conf/task_scale/lm/<scale>.yaml)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    path = files("cab.conf") / "task_scale" / "lm" / f"{scale}.yaml"
    return dict(OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True).get("task") or {})


def _build(attention, hparams, model, batch, length, tokens, dim, num_heads, lm_scale, seed):
    """-> (module, the layers under test, a prompt, a next-token function)."""
    import torch

    from cab.patterns import Pattern
    from cab.registry import build_attention, task_spec, with_length_bound

    longest = length + tokens  # a length-bounded mechanism (cosformer's M) must cover the generated tokens
    g = torch.Generator().manual_seed(seed)
    if model == "layer":
        layer = build_attention(attention, dim=dim, num_heads=num_heads, pattern=Pattern.CAUSAL_SELF,
                                **with_length_bound(attention, hparams, longest))
        prompt = torch.randn(batch, length, dim, generator=g)
        token = torch.randn(batch, 1, dim, generator=g)
        return layer, [layer], prompt, lambda out: token
    from cab.run.factory import AttentionFactory

    task = task_spec("lm").cls(pattern=Pattern.CAUSAL_SELF, seed=seed, **_lm_params(lm_scale))
    factory = AttentionFactory(attention, Pattern.CAUSAL_SELF, hparams, lengths={Pattern.CAUSAL_SELF: (longest, longest)})
    lm = task.build_model(factory)
    prompt = torch.randint(0, task.corpus.vocab_size, (batch, length), generator=g)
    return lm, factory.layers_under_test, prompt, lambda logits: logits[:, -1:].argmax(-1)


def measure_decode_point(attention: str, length: int, batch: int = 1, dim: int = 512, num_heads: int = 8,
                         device: str = "cpu", dtype: str = "float32", warmup: int = 4, tokens: int = 32,
                         hparams: dict | None = None, model: str = "layer", lm_scale: str = "cpu", seed: int = 0,
                         threads: int | None = None, imports: list[str] | None = None) -> dict[str, Any]:
    """One decode point in this process (see the module docstring) -> the point's fields."""
    import torch

    from cab.bench.measure import _sync, held_heap, median_iqr
    from cab.registry import import_modules
    from cab.results.status import classify

    if threads:
        torch.set_num_threads(int(threads))
    import_modules(imports or [])
    point: dict[str, Any] = {"length": length, "status": "ok", "time_median_s": None, "time_iqr_s": None,
                             "peak_memory_bytes": None, "flops": None, "error": None, "repeats": None}
    try:
        torch.manual_seed(seed)
        module, layers, prompt, next_input = _build(attention, dict(hparams or {}), model, batch, length,
                                                    warmup + tokens, dim, num_heads, lm_scale, seed)
        module = module.to(device=device, dtype=getattr(torch, dtype)).eval()
        prompt = prompt.to(device=device, dtype=getattr(torch, dtype) if prompt.is_floating_point() else None)
        point["params"] = sum(p.numel() for p in module.parameters())
        with torch.no_grad(), held_heap(device) as time_method:
            _sync(device)
            start = time.perf_counter()
            out, state = module.prefill(prompt)
            _sync(device)
            point["prefill_s"] = time.perf_counter() - start
            states = state if isinstance(state, list) else [state]
            point["state_numbers"] = sum(s.numbers() for s in states)
            stated = [layer.state_size(length) for layer in layers]
            if point["state_numbers"] != sum(stated):
                raise RuntimeError(f"state of {point['state_numbers']} numbers per example, stated {sum(stated)}")
            point["peak_memory_bytes"] = sum(s.nbytes() for s in states)
            point["state_allocated_bytes"] = sum(s.allocated_bytes() for s in states)
            samples, cpu = [], []
            for i in range(warmup + tokens):
                x = next_input(out)
                _sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                out, state = module.step(x, state)
                _sync(device)
                if i >= warmup:
                    samples.append(time.perf_counter() - start)
                    cpu.append(time.process_time() - start_cpu)
        point["time_median_s"], point["time_iqr_s"] = median_iqr(samples)
        if not device.startswith("cuda"):  # host CPU time says nothing of a GPU's work
            point["cpu_time_median_s"], point["cpu_time_iqr_s"] = median_iqr(cpu)
        point["repeats"] = len(samples)
        point["time_method"] = time_method or TIME_METHOD
    except Exception as exc:  # noqa: BLE001 - a failed point is recorded, the sweep goes on
        point["status"] = classify(exc)
        point["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    return point


# ---------------------------------------------------------------------------------------------
# the job's worker process: every point of a job in one process


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """The `decode` node of a bench config, with its defaults: model, lm_scale, tokens, warmup."""
    node = dict(config.get("decode") or {})
    model = str(node.get("model") or "layer")
    if model not in MODELS:
        from cab.registry import ChoiceError

        raise ChoiceError(f"decode.model={model}: expected one of {', '.join(MODELS)}")
    return {"model": model, "lm_scale": str(node.get("lm_scale") or config.get("scale") or "cpu"),
            "tokens": int(node.get("tokens", 32)), "warmup": int(node.get("warmup", 4))}


def point_kwargs(config: dict[str, Any], attention: str, hparams: dict, device: str) -> dict[str, Any]:
    """measure_decode_point's settings from a bench config."""
    s = settings(config)
    return dict(attention=attention, batch=int(config["batch"]), dim=int(config["dim"]),
                num_heads=int(config["num_heads"]), device=device, dtype=str(config.get("dtype", "float32")),
                warmup=s["warmup"], tokens=s["tokens"], hparams=hparams, model=s["model"], lm_scale=s["lm_scale"],
                seed=int(config.get("seed", 0)), threads=config.get("threads"), imports=list(config.get("imports") or []))


_WORKER = (
    "import json,sys\n"
    "from cab.bench.decode import measure_decode_point\n"
    "kwargs = json.loads(sys.argv[1])\n"
    "for line in sys.stdin:\n"
    "    print(json.dumps(measure_decode_point(length=int(line), **kwargs)), flush=True)\n"
)


class Worker:
    """A process that measures decode points one length at a time (stdin: a length; stdout: a JSON point)."""

    def __init__(self, kwargs: dict[str, Any], memory_limit_bytes: int | None):
        from cab.bench.measure import _limit_memory

        self.kwargs = kwargs
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - its last line names a crash; closed with the worker
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(kwargs)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     preexec_fn=_limit_memory(memory_limit_bytes))

    def measure(self, length: int, timeout_s: float) -> dict[str, Any]:
        dead = {"length": length, "flops": None, "time_median_s": None, "time_iqr_s": None,
                "peak_memory_bytes": None, "repeats": None}
        try:
            self.proc.stdin.write(f"{length}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.close()
            return {**dead, "status": "timeout", "error": f"over {timeout_s:g} s"}
        line = self.proc.stdout.readline()
        if not line:  # the process died: killed by the OOM killer, or refused memory past its limit
            code = self.proc.wait()
            self.stderr.seek(0)
            tail = (self.stderr.read().strip().splitlines() or [""])[-1]
            self.close()
            status = "oom" if code in (-9, 137) else "failed"
            return {**dead, "status": status, "error": f"decode worker exited with {code}: {tail}"[:500]}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


_WORKERS: dict[str, Worker] = {}


def measure(config: dict[str, Any], attention: str, hparams: dict, pattern: str, length: int) -> dict[str, Any]:
    """One decode point of a job: in the job's worker process (CPU, `isolate` auto) or in this one."""
    from cab.bench.job import resolve_device

    device = resolve_device(config)
    kwargs = point_kwargs(config, attention, hparams, device)
    isolate = config.get("isolate", "auto")
    isolate = (not device.startswith("cuda")) if isolate in ("auto", None) else bool(isolate)
    if not isolate:
        return measure_decode_point(length=length, **kwargs)
    key = json.dumps(kwargs, sort_keys=True, default=str)
    worker = _WORKERS.get(key)
    if worker is None or worker.proc.poll() is not None:
        limit = config.get("memory_limit_gb")
        worker = _WORKERS[key] = Worker(kwargs, int(float(limit) * 2**30) if limit else None)
    return worker.measure(length, float(config.get("point_timeout_s") or 900))


def close_workers() -> None:
    """End every worker (after a job's decode direction)."""
    while _WORKERS:
        _WORKERS.popitem()[1].close()


def finish_record(record: dict[str, Any], config: dict[str, Any]) -> None:
    """The decode-specific fields of a `direction: decode` efficiency record, once its points are in."""
    eff = record["efficiency"]
    s = settings(config)
    eff.update(model=s["model"], mode=MODE, flops_convention=FLOPS_CONVENTION, memory_method=MEMORY_METHOD,
               time_method=eff.get("time_method") or TIME_METHOD, tokens=s["tokens"], warmup_tokens=s["warmup"])
    if s["model"] == "lm":
        sizes = _lm_params(s["lm_scale"])
        eff.update(dim=int(sizes.get("d_model", 0)) or None, num_heads=int(sizes.get("num_heads", 0)) or None,
                   lm=sizes)
    ok = [p for p in eff["points"] if p["status"] == "ok"]
    if isinstance(eff.get("derived"), dict) and ok:  # the same fit on CPU seconds per token (CPU only)
        from cab.bench.job import EXPONENT_POINTS
        from cab.bench.scaling import scaling_exponent

        eff["derived"]["cpu_time_exponent"], _ = scaling_exponent(ok, "cpu_time_median_s", EXPONENT_POINTS)
    if record.get("cost") is not None and ok:
        record["cost"]["params"] = ok[-1].get("params", record["cost"].get("params"))
        record["cost"]["state_numbers_at_max_length"] = ok[-1].get("state_numbers")
        record["cost"]["time_per_token_at_max_length_s"] = ok[-1].get("time_median_s")

