"""Snapshot every attention × pattern layer's outputs, to check that a refactor changes no numbers.

    python scripts/layer_snapshot.py save  SNAPSHOT.pt     # on the code before the change
    python scripts/layer_snapshot.py compare SNAPSHOT.pt   # on the code after it

`save` builds each registered layer on each pattern it claims (float64, fixed seed), runs it on
fixed inputs without padding and with padding that differs per batch row, and stores the weights,
the inputs and the outputs. `compare` loads the stored weights into the layer as the current code
builds it (strictly: a renamed parameter is reported), reruns the same inputs and prints, per cell,
the largest absolute difference. Cells whose difference exceeds `--atol` are listed as changed.
"""

from __future__ import annotations

import argparse
import sys

import torch

from cab import Pattern, attention_spec, build_attention, list_attentions

DIM, HEADS, BATCH, LEN_Q, LEN_K = 32, 4, 3, 24, 40


def cells() -> list[tuple[str, Pattern]]:
    order = list(Pattern)
    return [(n, p) for n in list_attentions() for p in sorted(attention_spec(n).patterns, key=order.index)]


def inputs(pattern: Pattern) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, LEN_Q if pattern.is_cross else LEN_K, DIM, generator=g, dtype=torch.float64)
    context = torch.randn(BATCH, LEN_K, DIM, generator=g, dtype=torch.float64) if pattern.is_cross else None
    keys = LEN_K
    mask = torch.zeros(BATCH, keys, dtype=torch.bool)
    for row, pad in enumerate((0, 3, 11)):  # padding that differs per row
        if pad:
            mask[row, keys - pad :] = True
    return {"x": x, "context": context, "mask": mask}


def run(layer, data) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        plain = layer(data["x"], context=data["context"])
        padded = layer(data["x"], context=data["context"], key_padding_mask=data["mask"])
    return {"plain": plain, "padded": padded}


def save(path: str) -> None:
    snapshot = {}
    for name, pattern in cells():
        torch.manual_seed(0)
        layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern=pattern).double().eval()
        data = inputs(pattern)
        snapshot[f"{name}/{pattern.value}"] = {"state": layer.state_dict(), "outputs": run(layer, data)}
    torch.save(snapshot, path)
    print(f"saved {len(snapshot)} cells to {path}")


def compare(path: str, atol: float) -> int:
    snapshot = torch.load(path, weights_only=False)
    changed, missing = [], []
    for name, pattern in cells():
        key = f"{name}/{pattern.value}"
        if key not in snapshot:
            missing.append(key)
            continue
        torch.manual_seed(0)
        layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern=pattern).double().eval()
        try:
            layer.load_state_dict(snapshot[key]["state"], strict=True)
        except RuntimeError as err:
            changed.append((key, f"weights differ: {str(err).splitlines()[0]}"))
            continue
        outputs = run(layer, inputs(pattern))
        for case, before in snapshot[key]["outputs"].items():
            after = outputs[case]
            if case == "padded" and not pattern.is_cross:  # padded queries' outputs are meaningless
                keep = ~inputs(pattern)["mask"]
                before, after = before[keep], after[keep]
            diff = (after - before).abs().max().item()
            print(f"{key:40s} {case:7s} max |after - before| = {diff:.3e}")
            if not diff <= atol:
                changed.append((key, f"{case}: {diff:.3e}"))
    print(f"\n{len(cells())} cells compared; {len(changed)} changed (atol {atol:g}); {len(missing)} new")
    for key, why in changed:
        print(f"  changed: {key} ({why})")
    for key in missing:
        print(f"  new (no snapshot): {key}")
    return 1 if changed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["save", "compare"])
    parser.add_argument("path")
    parser.add_argument("--atol", type=float, default=1e-12)
    args = parser.parse_args()
    if args.mode == "save":
        save(args.path)
        return 0
    return compare(args.path, args.atol)


if __name__ == "__main__":
    sys.exit(main())
