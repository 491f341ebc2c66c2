"""The training loop of one cell: build the task and its model, train, evaluate, measure the cost.

`train_and_evaluate` fills the record in place and raises on any failure; `cab.run.runner` owns
the record's lifecycle (skip, crash marker, time limit, the status of a failure). torch and the
modules that need it are imported inside the functions, so importing the runner stays light.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from typing import Any, Iterator

from cab.patterns import Pattern
from cab.registry import attention_spec, task_spec
from cab.results.status import JobTimeout, NaNLoss


class InjectedFailure(RuntimeError):
    pass


def _inject(fail: str | None, where: str) -> None:
    """debug.fail: prove each failure path (tests)."""
    if not fail:
        return
    import torch

    if fail == "exception" and where == "train":
        raise InjectedFailure("injected failure (debug.fail=exception)")
    if fail == "oom" and where == "train":
        raise torch.OutOfMemoryError("injected out-of-memory (debug.fail=oom)")
    if fail == "timeout" and where == "train":
        raise JobTimeout("injected timeout (debug.fail=timeout)")
    if fail == "kill" and where == "train":
        os.kill(os.getpid(), signal.SIGKILL)


def _device(config: dict[str, Any]) -> str:
    import torch

    wanted = config.get("device", "auto")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


CPU_ALLOCATORS = ("held", "default")  # the config's `cpu_allocator`


@contextlib.contextmanager
def allocator_policy(config: dict[str, Any]) -> Iterator[str]:
    """The host allocator for one job; yields the policy that ran, for the record's `allocator`:

    - `glibc_default` (`cpu_allocator: default`, the default, CPU): glibc's settings as they are;
    - `glibc_held` (`cpu_allocator: held`, CPU): glibc keeps freed memory for reuse during training
      and evaluation (no mmap, no trim: `cab.bench.measure.held_heap`, as `cab bench` times), so
      temporaries of 32 MiB and more do not pay fresh page faults every step. Not the default: at the
      `cpu` task shapes training gains nothing from it (benchmarks/results/allocator_training.md);
    - `system`: not glibc (macOS, Windows, musl), or the settings could not be changed: left alone;
    - `cuda_caching`: a CUDA job, whose tensors torch's caching allocator serves (the host heap is left alone)."""
    import platform

    wanted = str(config.get("cpu_allocator") or "default").lower()
    if wanted not in CPU_ALLOCATORS:
        raise ValueError(f"cpu_allocator must be one of {', '.join(CPU_ALLOCATORS)}, got {wanted!r}")
    if _device(config).startswith("cuda"):
        yield "cuda_caching"
        return
    if wanted == "default":
        yield "glibc_default" if platform.libc_ver()[0] == "glibc" else "system"
        return
    from cab.bench.measure import held_heap

    with held_heap("cpu") as method:
        yield "glibc_held" if method else "system"


def train_and_evaluate(record, config, attention, attention_hparams, task_name, task_params, pattern) -> None:
    """Train and evaluate one cell, filling `record`'s task fields, metrics and cost in place. Raises
    for every failure (NaNLoss for a loss or metric that is not finite); the caller records it."""
    import torch

    from cab.bench.flops import forward_flops
    from cab.run.factory import AttentionFactory
    from cab.run.progress import TrainProgress

    trainer = config["trainer"]
    seed = int(config["seed"])
    fail = (config.get("debug") or {}).get("fail")
    fail = None if fail is None else str(fail).lower()  # YAML reads `nan` as a float NaN
    device = _device(config)
    torch.manual_seed(seed)

    spec = task_spec(task_name)
    task = spec.cls(pattern=pattern, seed=seed, **task_params)
    factory = AttentionFactory(attention, pattern, attention_hparams, lengths=task.longest_attention_lengths(),
                               distributed=config.get("distributed"), device=device)
    model = task.build_model(factory).to(device)
    record["metric_info"] = {k: v.as_dict() for k, v in task.metric_info.items()}
    record["primary_metric"] = task.primary_metric
    record["task_variant"] = task.variant()
    record["reference_metrics"] = task.reference_metrics()
    gate = task.reference_gate()  # the bar softmax must clear for this column to count (cab/gates.py)
    record["gate"] = gate.as_dict() if gate is not None else None
    built_with = {**attention_spec(attention).default_hparams(), **factory.hparams_for(Pattern.parse(pattern))}
    record["attention_info"] = {"hparams": built_with,
                                **{k: v for layer in factory.layers_under_test for k, v in layer.runtime_info().items()}}

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(trainer["lr"]), weight_decay=float(trainer.get("weight_decay", 0.0)),
        betas=tuple(trainer.get("betas", (0.9, 0.999))),
    )
    steps = int(trainer["steps"])
    warmup = int(trainer.get("warmup_steps", 0))

    def lr_scale(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_scale)
    clip = trainer.get("grad_clip")
    log_every = max(1, int(trainer.get("log_every", 10)))
    batches = _cycle(task, int(trainer["batch_size"]), device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    # Early stopping at a target (Zoology stops MQAR at 0.99); off unless set. The learning curve and
    # the stopping rule read the validation split when the task has one (never the test set then).
    curve = task.validate if task.has_validation() else task.evaluate
    early_stop_at = trainer.get("early_stop_at")
    early_stop_metric = trainer.get("early_stop_metric") or task.primary_metric
    higher_is_better = task.metric_info[early_stop_metric].higher_is_better if early_stop_metric in task.metric_info else True
    # Informer's protocol: stop after `early_stop_patience` evaluations without a better validation
    # value, and evaluate the best checkpoint seen (restore_best), not the last.
    patience = trainer.get("early_stop_patience")
    restore_best = bool(trainer.get("restore_best"))
    eval_every = int(trainer.get("eval_every") or 0)  # 0: evaluate only at the end
    if (early_stop_at is not None or patience or restore_best) and not eval_every:
        eval_every = max(1, steps // 10)
    if (patience or restore_best) and not task.has_validation():
        raise ValueError(f"trainer.early_stop_patience / restore_best need a validation split; task {task_name!r} has "
                         "none (set its validation_examples)")
    history: list[dict[str, float]] = []  # the learning curve, when eval_every is set
    best = {"value": None, "step": 0, "state": None, "stale": 0}

    _inject(fail, "train")
    model.train()
    tokens = 0
    step = 0
    train_start = time.perf_counter()
    with TrainProgress(total=steps, description=f"{attention} · {task_name} · {pattern.value}") as progress:
        for step in range(steps):
            batch = next(batches)
            loss = task.loss(task.forward(model, batch), batch)
            if fail == "nan" and step == steps // 2:
                loss = loss * float("nan")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            factory.sync_gradients()  # sequence-parallel layers under test: Σ over the ranks (no-op in one process)
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            optimizer.step()
            scheduler.step()
            tokens += task.tokens(batch)
            if (step + 1) % log_every == 0 or step + 1 == steps:
                value = loss.item()  # the only host sync in the loop, once every log_every steps
                if not math.isfinite(value):
                    raise NaNLoss(f"loss became {value} at step {step + 1}")
                progress.update(step + 1, value)
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
                paused = time.perf_counter()
                model.eval()
                evaluated = {k: float(v) for k, v in curve(model).items()}
                model.train()
                train_start += time.perf_counter() - paused  # evaluation is not training time
                history.append({"step": step + 1, **evaluated})
                progress.note(f"step {step + 1}: {early_stop_metric} {evaluated.get(early_stop_metric, float('nan')):.4f}")
                reached = evaluated.get(early_stop_metric)
                if early_stop_at is not None and reached is not None and reached >= early_stop_at:
                    record["early_stopped_at_step"] = step + 1
                    break
                if reached is not None and (patience or restore_best):
                    if best["value"] is None or (reached > best["value"] if higher_is_better else reached < best["value"]):
                        best.update(value=reached, step=step + 1, stale=0)
                        if restore_best:
                            best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        best["stale"] += 1
                        if patience and best["stale"] >= int(patience):
                            record["early_stopped_at_step"] = step + 1
                            break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - train_start

    model.eval()
    if restore_best and best["state"] is not None:
        final = task.validate(model)[early_stop_metric]  # the last weights compete with the best seen
        if final > best["value"] if higher_is_better else final < best["value"]:
            best.update(value=final, step=step + 1)
        else:
            model.load_state_dict(best["state"])
        record["restored_step"] = best["step"]
    eval_start = time.perf_counter()
    record["metrics"] = {k: float(v) for k, v in task.evaluate(model).items()}
    if task.has_validation():  # what learning-rate selection compares (cab/run/lr_selection.py)
        record["validation_metrics"] = {k: float(v) for k, v in task.validate(model).items()}
    if history:
        record["eval_history"] = history
        record["eval_history_split"] = "validation" if task.has_validation() else "test"
    eval_seconds = time.perf_counter() - eval_start
    bad = [k for k, v in record["metrics"].items() if not math.isfinite(v)]
    if bad:
        raise NaNLoss(f"metrics not finite: {', '.join(bad)}")

    example = task.example_batch()
    example = _to_device(example, device)
    flops = forward_flops(model, lambda: task.forward(model, example), factory.all_layers, factory.layers_under_test)
    state_sizes = [layer.state_size(_seq_len(task, pattern)) for layer in factory.layers_under_test]
    record["cost"] = {
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_example": flops["total"],
        "attention_flops_per_example": flops["tested"],
        "flops_convention": "2 per multiply-add; forward; attention layers by their analytic formula, the rest counted by torch.utils.flop_counter",
        "peak_memory_bytes": _peak_memory(device),
        "memory_method": "cuda_max_memory_allocated" if device.startswith("cuda") else "process_peak_rss",
        "wall_s": round(train_seconds + eval_seconds, 3),
        "train_s": round(train_seconds, 3),
        "eval_s": round(eval_seconds, 3),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds > 0 else None,
        "state_size": sum(state_sizes) if state_sizes and all(s is not None for s in state_sizes) else None,
        "device": device,
    }
    if config.get("save_checkpoint"):  # the trained weights, for `cab generate` (cab/run/generate.py)
        from cab.run.generate import save_checkpoint

        record["checkpoint"] = save_checkpoint(model, config, record["run_id"])


def _seq_len(task, pattern: Pattern) -> int:
    lengths = task.attention_lengths()
    if pattern in lengths:
        return int(lengths[pattern][1])
    return int(task.params.get("seq_len", 0))


def _cycle(task, batch_size: int, device: str):
    """Epoch after epoch of the task's batches, moved to the device."""
    while True:
        empty = True
        for batch in task.train_batches(batch_size):
            empty = False
            yield _to_device(batch, device)
        if empty:
            raise RuntimeError("task produced no training batches")


def _to_device(batch, device: str):
    if device == "cpu":
        return batch
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _peak_memory(device: str) -> int:
    import resource

    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
