"""Can the gCOG models fit their training data at cpu width? A sanity check for gcog_cpu.md.

    python benchmarks/gcog_fit_check.py noncausal_cross      # or noncausal_self (single stream)

Trains the task's model (softmax, width 64, as conf/task_scale/gcog/cpu.yaml) on 512 training
examples of the distractor split for 1,200 steps of 64 (AdamW lr 1e-3, one thread) and prints the
training loss and the accuracy on those 512 examples every 300 steps. Reaching ~1.0 shows that the
data, the labels and the model line up (it memorises); it says nothing about generalisation.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import cab.tasks.gcog as gcog
from cab.patterns import Pattern
from cab.registry import build_attention


def main(pattern_name: str = "noncausal_cross") -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task = gcog.GCOGTask(Pattern.parse(pattern_name), 0, train_examples=512, test_examples=100, d_model=64,
                         num_heads=2, num_layers=1, cross_layers=1)
    model = task.build_model(lambda p, d, h: build_attention("softmax", dim=d, num_heads=h, pattern=p))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = task.train_data
    for step in range(1, 1201):
        idx = torch.randint(0, len(data), (64,))
        loss = F.cross_entropy(model(data.instr[idx], data.grid[idx]), data.labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 300 == 0:
            model.eval()
            with torch.no_grad():
                accuracy = (model(data.instr, data.grid).argmax(-1) == data.labels).float().mean().item()
            model.train()
            print(f"{pattern_name} step {step}: loss {loss.item():.3f}, train accuracy {accuracy:.3f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
