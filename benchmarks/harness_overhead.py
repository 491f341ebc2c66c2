"""Does the harness slow the model it runs? And does `cab` start fast?

    python benchmarks/harness_overhead.py --out benchmarks/results/harness_overhead.md

1. Wall time of `cab --help` and of a smoke MQAR run (`cab run ... trainer=smoke`), in fresh
   processes, median of several.
2. Training throughput (tokens/s) of `cab run`'s training loop (cab.run.runner.run_job) against a bare
   PyTorch loop that trains the same model (same task code, same batches, same optimizer and
   schedule) for the same number of steps, alternating the two, median of the repeats. The bare loop
   runs twice per repeat: with the allocator as it is, and inside `held_heap`, the policy `cab run`
   applies with `cpu_allocator=held`, so the harness is also compared like for like.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def wall(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def bare_loop(config: dict) -> float:
    """Tokens/s of a plain loop: the same model, batches, optimizer and schedule as run_job."""
    from cab.registry import task_spec
    from cab.run.factory import AttentionFactory

    trainer, seed = config["trainer"], int(config["seed"])
    torch.manual_seed(seed)
    task_cfg = dict(config["task"])
    task = task_spec(task_cfg.pop("name")).cls(pattern=config["pattern"], seed=seed, **task_cfg)
    attention_cfg = dict(config["attention"])
    model = task.build_model(AttentionFactory(attention_cfg.pop("name"), config["pattern"], attention_cfg))
    steps = int(trainer["steps"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(trainer["lr"]), weight_decay=float(trainer["weight_decay"]))
    warmup = int(trainer.get("warmup_steps", 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    batches = iter(())
    model.train()
    tokens, start = 0, time.perf_counter()
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = iter(task.train_batches(int(trainer["batch_size"])))
            batch = next(batches)
        inputs, labels = batch
        loss = torch.nn.functional.cross_entropy(model(inputs, labels), labels[labels != -100])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if trainer.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(trainer["grad_clip"]))
        optimizer.step()
        scheduler.step()
        tokens += inputs.numel()
    loss.item()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both loops (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from conftest import compose

    from cab.run.runner import run_job

    cab_bin = str(Path(sys.executable).with_name("cab"))
    help_times = wall([cab_bin, "--help"], args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        smoke = [cab_bin, "run", "attention=softmax", "task=mqar", "pattern=causal_self", "trainer=smoke",
                 f"results_dir={tmp}", "force=true"]
        smoke_times = wall(smoke, max(3, args.repeats // 2))

        config = compose(["attention=softmax", "task=mqar", "pattern=causal_self", "trainer=cpu",
                          f"trainer.steps={args.steps}", f"results_dir={tmp}", "force=true",
                          *([f"threads={args.threads}"] if args.threads else [])])
        from cab.bench.measure import held_heap

        harness, bare, bare_held, policies = [], [], [], set()
        for _ in range(args.repeats):
            record = run_job(config)
            harness.append(record["cost"]["tokens_per_second"])
            policies.add(record["allocator"])
            bare.append(bare_loop(config))
            with held_heap("cpu"):
                bare_held.append(bare_loop(config))
    ratio = statistics.median(harness) / statistics.median(bare)
    ratio_held = statistics.median(harness) / statistics.median(bare_held)
    paired = [h / b for h, b in zip(harness, bare)]  # each harness run against the bare run right after it
    lines = [
        "# Harness overhead and start-up time",
        "",
        f"{platform.machine()}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}, torch {torch.__version__}, python {platform.python_version()}; "
        f"`python {' '.join(sys.argv)}`",
        "",
        "| measurement | median | all runs |",
        "|---|---|---|",
        f"| `cab --help` wall time | {statistics.median(help_times):.3f} s | {', '.join(f'{t:.3f}' for t in help_times)} |",
        f"| smoke MQAR run wall time (`cab run attention=softmax task=mqar pattern=causal_self trainer=smoke`) | "
        f"{statistics.median(smoke_times):.2f} s | {', '.join(f'{t:.2f}' for t in smoke_times)} |",
        f"| `cab run` training throughput, MQAR cpu scale, {args.steps} steps | {statistics.median(harness):,.0f} tokens/s | "
        f"{', '.join(f'{t:,.0f}' for t in harness)} |",
        f"| bare PyTorch loop, same model and batches | {statistics.median(bare):,.0f} tokens/s | {', '.join(f'{t:,.0f}' for t in bare)} |",
        f"| bare PyTorch loop inside `held_heap` (the allocator policy `cab run` can use) | "
        f"{statistics.median(bare_held):,.0f} tokens/s | {', '.join(f'{t:,.0f}' for t in bare_held)} |",
        f"| ratio cab / bare (target ≥ 0.95) | **{ratio:.3f}** | |",
        f"| ratio cab / bare, run by run (each harness run against the bare run right after it) | "
        f"{statistics.median(paired):.3f} | {', '.join(f'{x:.3f}' for x in paired)} |",
        f"| ratio cab / bare inside `held_heap` | {ratio_held:.3f} | |",
        "",
        f"`cab run` ran with the record's `allocator` = {', '.join(f'`{p}`' for p in sorted(map(str, policies)))} "
        f"(the config's default `cpu_allocator`); machine load average (1 min) at the end: {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
