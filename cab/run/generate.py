"""`cab generate`: sample text from a model trained by `cab run`, token by token through the decode form.

    cab run attention=linear task=lm pattern=causal_self save_checkpoint=true      # writes the weights
    cab generate checkpoint=results/checkpoints/RUN_ID.pt prompt="ROMEO:" tokens=200
    cab generate checkpoint=... temperature=0                 # greedy (argmax) instead of sampling
    cab generate checkpoint=... path=parallel                 # every token by a full forward (the check)

Keys (key=value, as `cab run` overrides): checkpoint (required), prompt (default "\\n"), tokens (200),
temperature (1.0; 0 = greedy), top_k (none), seed (0), device (auto), threads (none), and optionally
attention= and task=, which must match the checkpoint's (a guard against the wrong file).
`path=decode` (the default) reads the prompt with the model's `prefill` (the parallel form) and then
generates with `step`, one token at a time from each layer's recurrent state (docs/decode.md);
`path=parallel` runs the whole model over the sequence so far for every token (the reference: greedy
generation is the same text either way, tests/test_generate.py). The text goes to stdout; the timing
(prefill seconds, time per generated token, tokens per second, state numbers per example) to stderr.

A checkpoint (`save_checkpoint: true` in `cab run`, off by default) is
`<results_dir>/checkpoints/<run_id>.pt`: the model's weights and the resolved config of the run that
trained them, whose record names it (`checkpoint`). The model is rebuilt from that config through the
task and attention registries, so generation needs only the file (and the task's data, for its vocabulary).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from cab.registry import ChoiceError

CHECKPOINT_FORMAT = "cab.checkpoint/1"
DEFAULTS: dict[str, Any] = {"checkpoint": None, "prompt": "\n", "tokens": 200, "temperature": 1.0, "top_k": None,
                            "seed": 0, "device": "auto", "threads": None, "path": "decode", "attention": None,
                            "task": None}
PATHS = ("decode", "parallel")


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(model, config: dict[str, Any], run_id: str) -> str:
    """Write `model`'s weights and the run's `config` to <results_dir>/checkpoints/<run_id>.pt (atomically);
    -> the path, as the record gives it."""
    import torch

    folder = Path(config["results_dir"]) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{run_id}.pt"
    tmp = folder / f".{run_id}.pt.tmp"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "run_id": run_id, "config": config, "state_dict": state}, tmp)
    os.replace(tmp, target)
    return str(target)


def load_model(checkpoint: str | Path, device: str = "cpu"):
    """Rebuild the trained model of a checkpoint: -> (model in eval mode, its task, the run's config)."""
    import torch

    from cab.patterns import Pattern
    from cab.registry import import_modules, task_spec
    from cab.run.factory import AttentionFactory

    path = Path(checkpoint)
    if not path.is_file():
        raise ChoiceError(f"checkpoint={checkpoint}: no such file (cab run ... save_checkpoint=true writes "
                          f"<results_dir>/checkpoints/<run_id>.pt)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ChoiceError(f"checkpoint={checkpoint}: not a cab checkpoint (expected format {CHECKPOINT_FORMAT})")
    config = saved["config"]
    import_modules(config.get("imports") or [])
    hparams, task_params = dict(config["attention"]), dict(config["task"])
    attention, task_name = hparams.pop("name"), task_params.pop("name")
    if task_params.get("data_dir") and not Path(task_params["data_dir"]).is_dir():  # trained elsewhere
        task_params["data_dir"] = os.environ.get("CAB_DATA_DIR")
    pattern = Pattern.parse(config["pattern"])
    task = task_spec(task_name).cls(pattern=pattern, seed=int(config["seed"]), **task_params)
    factory = AttentionFactory(attention, pattern, hparams, lengths=task.longest_attention_lengths())
    model = task.build_model(factory)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), task, config


# ---------------------------------------------------------------------------------------------
# generation


def sample_next(logits, temperature: float, top_k: int | None, generator):
    """The next token of each row of logits (B, V): argmax when temperature is 0, else a draw from
    softmax(logits / temperature) over the top_k most likely (all when top_k is None). -> (B,) long."""
    import torch

    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        cut = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < cut, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


def generate_ids(model, prompt, tokens: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                 path: str = "decode") -> tuple[Any, dict[str, Any]]:
    """Continue `prompt` (B, P) ids by `tokens` ids. -> (the new ids (B, tokens), timing).

    path "decode": prefill the prompt, then one `step` per token (each layer's recurrent state);
    "parallel": the full forward over everything so far, for each token. timing: prefill_s (the prompt and
    the first token), per_token_s (the median time of the following tokens), tokens_per_second, and
    state_numbers (numbers per example in every layer's state after the last token, decode only)."""
    import torch

    if path not in PATHS:
        raise ChoiceError(f"path={path}: expected one of {', '.join(PATHS)}")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    device = prompt.device
    out, times = [], []
    with torch.no_grad():
        start = time.perf_counter()
        if path == "decode":
            logits, states = model.prefill(prompt)
        else:
            logits, states, seen = model(prompt), None, prompt
        nxt = sample_next(logits[:, -1], temperature, top_k, generator).to(device)
        out.append(nxt)
        prefill_s = time.perf_counter() - start
        for _ in range(tokens - 1):
            start = time.perf_counter()
            if path == "decode":
                logits, states = model.step(nxt[:, None], states)
            else:
                seen = torch.cat([seen, nxt[:, None]], dim=1)
                logits = model(seen)
            nxt = sample_next(logits[:, -1], temperature, top_k, generator).to(device)
            out.append(nxt)
            times.append(time.perf_counter() - start)
    ids = torch.stack(out, dim=1) if out else prompt.new_zeros(prompt.shape[0], 0)
    per_token = statistics.median(times) if times else None
    timing = {"prefill_s": prefill_s, "per_token_s": per_token, "tokens_per_second": 1.0 / per_token if per_token else None,
              "state_numbers": sum(s.numbers() for s in states) if path == "decode" else None}
    return ids, timing


def _vocabulary(task, name: str) -> list[str]:
    chars = getattr(getattr(task, "corpus", None), "chars", None)
    if chars is None:
        raise ChoiceError(f"task {name!r} has no character vocabulary: generation needs a language-model task (lm)")
    return chars


def generate_text(checkpoint: str, prompt: str = "\n", tokens: int = 200, temperature: float = 1.0,
                  top_k: int | None = None, seed: int = 0, device: str = "cpu", path: str = "decode",
                  expect: dict[str, str | None] | None = None) -> tuple[str, dict[str, Any]]:
    """Load a checkpoint and continue `prompt` by `tokens` characters. -> (the generated text, timing).
    `expect`: {"attention": name, "task": name} the checkpoint must have been trained with (None: any)."""
    import torch

    model, task, config = load_model(checkpoint, device)
    for key, wanted in (expect or {}).items():
        if wanted and config[key]["name"] != wanted:
            raise ChoiceError(f"{key}={wanted}: the checkpoint was trained with {key}={config[key]['name']}")
    chars = _vocabulary(task, config["task"]["name"])
    if not hasattr(model, "step"):
        raise ChoiceError(f"task {config['task']['name']!r}: its model has no decode form (prefill/step)")
    lookup = {c: i for i, c in enumerate(chars)}
    unknown = sorted({c for c in prompt if c not in lookup})
    if unknown:
        raise ChoiceError(f"prompt has characters outside the model's vocabulary: {''.join(unknown)!r}")
    if not prompt:
        raise ChoiceError("prompt: expected at least one character")
    ids = torch.tensor([[lookup[c] for c in prompt]], dtype=torch.long, device=device)
    new, timing = generate_ids(model, ids, tokens, temperature, top_k, seed, path)
    timing.update(attention=config["attention"]["name"], task=config["task"]["name"], prompt_chars=len(prompt))
    return "".join(chars[i] for i in new[0].tolist()), timing


# ---------------------------------------------------------------------------------------------
# the command


def parse_args(args: list[str]) -> dict[str, Any]:
    """key=value arguments -> the settings (DEFAULTS overridden); one-line ChoiceError on a bad one."""
    settings = dict(DEFAULTS)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise ChoiceError(f"{arg}: expected key=value with key one of {', '.join(DEFAULTS)}")
        settings[key] = value
    if not settings["checkpoint"]:
        raise ChoiceError("checkpoint=PATH is required (cab run ... save_checkpoint=true writes one)")
    try:
        settings["tokens"] = int(settings["tokens"])
        settings["temperature"] = float(settings["temperature"])
        settings["seed"] = int(settings["seed"])
        for key in ("top_k", "threads"):
            v = settings[key]
            settings[key] = None if v in (None, "null", "none", "None") else int(v)
    except ValueError as exc:
        raise ChoiceError(f"bad value: {exc}") from None
    if settings["tokens"] < 1:
        raise ChoiceError(f"tokens={settings['tokens']}: expected an integer >= 1")
    if settings["temperature"] < 0:
        raise ChoiceError(f"temperature={settings['temperature']}: expected a number >= 0 (0: greedy)")
    if settings["top_k"] is not None and settings["top_k"] < 1:
        raise ChoiceError(f"top_k={settings['top_k']}: expected an integer >= 1 or null")
    if settings["path"] not in PATHS:
        raise ChoiceError(f"path={settings['path']}: expected one of {', '.join(PATHS)}")
    if "\\" in settings["prompt"]:  # prompt="ROMEO:\n" means a newline, as a shell passes it
        settings["prompt"] = settings["prompt"].encode().decode("unicode_escape")
    return settings


def main(args: list[str]) -> int:
    """`cab generate key=value ...` (the CLI dispatches here)."""
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    s = parse_args(args)
    import torch

    if s["threads"]:
        torch.set_num_threads(s["threads"])
    device = s["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    text, timing = generate_text(s["checkpoint"], s["prompt"], s["tokens"], s["temperature"], s["top_k"], s["seed"],
                                 device, s["path"], expect={"attention": s["attention"], "task": s["task"]})
    print(s["prompt"] + text)
    per_token = timing["per_token_s"]
    print(f"cab generate: {timing['attention']} · {timing['task']} · path={s['path']}: prompt of "
          f"{timing['prompt_chars']} characters read in {timing['prefill_s'] * 1e3:.1f} ms; "
          + (f"{per_token * 1e3:.2f} ms per generated token ({timing['tokens_per_second']:.0f} tokens/s)"
             if per_token else "one token")
          + (f"; state {timing['state_numbers']:,} numbers" if timing["state_numbers"] is not None else ""),
          file=sys.stderr)
    return 0
