"""Decode (recurrent) forms: prefill of a prompt, then token by token, equals the parallel causal forward.

Parametrized over the registry: every mechanism that declares a decode form (`declares_decode`) is run in
float64 at the tolerance of the contract test (1e-10), its state counted after every token against its
stated `state_size`; every other causal mechanism must say why it has none. A second pass uses small
windows, blocks and chunks, so that caches slide, blocks complete and prompts span several chunks.
Then the ops the decode forms are built from (`causal_recurrence_step`, `linear_attention_step`,
`TokenCache`), the listing, and the bench's decode direction on a fake clock and for real at tiny size.
"""

from __future__ import annotations

import os

import pytest
import torch

from cab import Pattern, attention_spec, build_attention, list_attentions, ops
from cab.attention import AttentionLayer, DecodeState

DIM, HEADS, BATCH = 32, 4, 3
PROMPT, TOTAL = 19, 45  # 19 tokens read by prefill, then 26 generated one at a time
TOL = dict(atol=1e-10, rtol=1e-10)

CAUSAL = list_attentions(pattern="causal_self")
DECODING = [n for n in CAUSAL if attention_spec(n).cls.declares_decode()]
# windows, blocks and chunks smaller than the sequence: caches slide, blocks and regions complete, routes and
# retrievals choose among several, prompts span chunks (the defaults of several exceed TOTAL)
SMALL = {
    "abc": dict(chunk_size=4, num_slots=3), "aggregated": dict(window_size=3, pool_size=5),
    "based": dict(window=5, feature_dim=4, chunk_size=8), "channel": dict(chunk_size=4),
    "cosformer": dict(chunk_size=8, max_len=64), "flowformer": dict(chunk_size=8), "halo": dict(block_size=3, halo_size=2),
    "landmark": dict(block_size=4, top_k=2), "lightning": dict(block_size=4, segment_blocks=2), "linear": dict(chunk_size=8),
    "lka": dict(kernel_size=3, dilated_kernel_size=3, dilation=2), "local": dict(window=5),
    "longshort": dict(window_size=5, chunk_size=4, chunk_rank=2), "lsda": dict(group_size=4, interval=3),
    "mamba": dict(d_state=4, d_conv=3), "performer": dict(chunk_size=8), "reformer": dict(bucket_size=2, num_buckets=4),
    "routing": dict(region_size=4, topk=2), "s4d": dict(kernel_block=8), "sliding_window": dict(window=5),
}
SMALL_CASES = [(n, SMALL[n]) for n in DECODING if n in SMALL]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Steps are small ops: one thread is faster than two contending ones (and the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, seed: int = 0, **hparams):
    torch.manual_seed(seed)
    layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern=Pattern.CAUSAL_SELF, **hparams).double()
    with torch.no_grad():  # parameters that start at zero would hide a term the decode form forgets
        for param in layer.parameters():
            if param.dim() and not param.abs().sum():
                param.normal_(0.0, 0.05)
    return layer.eval()


def sequence(seed: int = 1, length: int = TOTAL):
    return torch.randn(BATCH, length, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


def decode(layer, x, prompt: int = PROMPT):
    """Prefill x[:, :prompt], then step through the rest -> (outputs (B, L, dim), [(position, numbers)])."""
    with torch.no_grad():
        out, state = layer.prefill(x[:, :prompt])
        outs, sizes = [out], [(state.position, state.numbers())]
        for t in range(prompt, x.shape[1]):
            out_t, state = layer.step(x[:, t : t + 1], state)
            outs.append(out_t)
            sizes.append((state.position, state.numbers()))
    return torch.cat(outs, dim=1), sizes


def check_equivalence(name: str, prompt: int = PROMPT, total: int = TOTAL, **hparams):
    layer = make(name, **hparams)
    x = sequence(length=total)
    with torch.no_grad():
        parallel = layer(x)
    decoded, sizes = decode(layer, x, prompt)
    torch.testing.assert_close(decoded[:, :prompt], parallel[:, :prompt], **TOL, msg="prefill != forward")
    torch.testing.assert_close(decoded, parallel, **TOL, msg="prefill + steps != the parallel forward")
    assert [p for p, _ in sizes] == list(range(prompt, total + 1))
    for position, numbers in sizes:
        assert numbers == layer.state_size(position), f"state after {position} tokens: {numbers} numbers, " \
                                                       f"stated {layer.state_size(position)}"


@pytest.mark.parametrize("name", DECODING)
def test_prefill_then_steps_equal_the_parallel_form(name):
    check_equivalence(name)


@pytest.mark.parametrize("name,hparams", SMALL_CASES, ids=[n for n, _ in SMALL_CASES])
def test_prefill_then_steps_equal_the_parallel_form_small_windows(name, hparams):
    check_equivalence(name, **hparams)


@pytest.mark.parametrize("name", DECODING)
def test_a_one_token_prompt_then_steps(name):
    """The shortest prompt: nearly everything through `step` (and a state started from one token)."""
    check_equivalence(name, prompt=1, total=14, **SMALL.get(name, {}))


def test_every_causal_mechanism_decodes_or_says_why():
    assert len(DECODING) >= 14  # the list: exact, windows, the linear family, mamba, s4d, abc
    for name in CAUSAL:
        cls = attention_spec(name).cls
        reason = cls.decode_unsupported
        assert cls.declares_decode() != bool(reason and reason.strip()), \
            f"{name}: declare a decode form (prefill and step) or give `decode_unsupported`, not both or neither"


def test_layers_without_a_decode_form_and_other_patterns_refuse_clearly():
    class NoDecode(AttentionLayer):
        decode_unsupported = "its output depends on the whole sequence"

    layer = NoDecode(8, 2, Pattern.CAUSAL_SELF)
    layer.attention_name = "no_decode"
    assert not NoDecode.declares_decode()
    with pytest.raises(NotImplementedError, match="no_decode.*whole sequence"):
        layer.prefill(torch.zeros(1, 3, 8))
    noncausal = build_attention("linear", dim=DIM, num_heads=HEADS, pattern="noncausal_self")
    with pytest.raises(ValueError, match="causal_self"):
        noncausal.prefill(torch.zeros(1, 3, DIM))
    causal = build_attention("linear", dim=DIM, num_heads=HEADS, pattern="causal_self")
    with pytest.raises(ValueError, match="at least one token|L >= 1"):
        causal.prefill(torch.zeros(1, 0, DIM))


def test_constant_state_mechanisms_do_not_grow_and_caches_do():
    for name, grows in (("linear", False), ("mamba", False), ("s4d", False), ("sliding_window", False),
                        ("softmax", True), ("vanilla", True)):
        layer = build_attention(name, dim=DIM, num_heads=HEADS, pattern="causal_self")
        assert (layer.state_size(4096) > layer.state_size(1024)) == grows, name
    assert build_attention("softmax", dim=DIM, num_heads=HEADS, pattern="causal_self").state_size(100) == 2 * DIM * 100


def test_cosformer_stops_at_its_horizon():
    layer = make("cosformer", max_len=5)
    _, state = layer.prefill(sequence(length=5))
    with pytest.raises(ValueError, match="max_len 5"):
        layer.step(sequence(length=1), state)


def test_listing_shows_decode():
    from rich.console import Console

    from cab.listing import print_listing

    console = Console(record=True, width=200)
    print_listing(console)
    text = console.export_text()
    assert "decode" in text
    row = next(line for line in text.splitlines() if line.strip("│ ").startswith("softmax "))
    assert row.count("✓") == 5  # four patterns and decode


# -- the ops the decode forms are built from ---------------------------------------------------


def _decays(g, b, h, length, dk):
    return {
        "none": None,
        "head": -torch.rand(h, generator=g, dtype=torch.double),
        "position": -torch.rand(b, h, length, generator=g, dtype=torch.double),
        "channel": -torch.rand(b, h, length, dk, generator=g, dtype=torch.double),
        "factored": (torch.rand(b, h, length, generator=g, dtype=torch.double),
                     -torch.rand(h, dk, generator=g, dtype=torch.double)),
    }


def _at(decay, t):
    if decay is None or (not isinstance(decay, tuple) and decay.dim() == 1):
        return decay
    if isinstance(decay, tuple):
        return decay[0][:, :, t], decay[1]
    return decay[:, :, t]


@pytest.mark.parametrize("kind", ["none", "head", "position", "channel", "factored"])
def test_causal_recurrence_step_continues_the_chunked_form(kind):
    g = torch.Generator().manual_seed(3)
    b, h, length, split, dk, dv = 2, 3, 29, 11, 5, 4
    dv = 1 if kind == "factored" else dv
    q, k = (torch.randn(b, h, length, dk, generator=g, dtype=torch.double) for _ in range(2))
    v = torch.randn(b, h, length, dv, generator=g, dtype=torch.double)
    decay = _decays(g, b, h, length, dk)[kind]
    whole = ops.causal_recurrence(q, k, v, decay, chunk_size=4, return_final_state=True)
    part = ops.causal_recurrence(q[:, :, :split], k[:, :, :split], v[:, :, :split],
                                 _piece(decay, split), chunk_size=4, return_final_state=True)
    state, outs = part[1], [part[0]]
    for t in range(split, length):
        out, state = ops.causal_recurrence_step(q[:, :, t], k[:, :, t], v[:, :, t], state, _at(decay, t))
        outs.append(out[:, :, None])
    torch.testing.assert_close(torch.cat(outs, dim=2), whole[0], **TOL)
    torch.testing.assert_close(state, whole[1], **TOL)


def _piece(decay, split):
    if decay is None or (not isinstance(decay, tuple) and decay.dim() == 1):
        return decay
    if isinstance(decay, tuple):
        return decay[0][:, :, :split], decay[1]
    return decay[:, :, :split]


def test_linear_attention_step_continues_the_causal_form():
    g = torch.Generator().manual_seed(4)
    b, h, length, split, f, dv = 2, 3, 21, 8, 6, 5
    phi_q, phi_k = (torch.rand(b, h, length, f, generator=g, dtype=torch.double) for _ in range(2))
    v = torch.randn(b, h, length, dv, generator=g, dtype=torch.double)
    for normalize in (True, False):
        whole = ops.linear_attention(phi_q, phi_k, v, causal=True, normalize=normalize, chunk_size=4)
        out, state = ops.linear_attention(phi_q[:, :, :split], phi_k[:, :, :split], v[:, :, :split], causal=True,
                                          normalize=normalize, chunk_size=4, return_final_state=True)
        outs = [out]
        for t in range(split, length):
            out, state = ops.linear_attention_step(phi_q[:, :, t], phi_k[:, :, t], v[:, :, t], state, normalize=normalize)
            outs.append(out[:, :, None])
        torch.testing.assert_close(torch.cat(outs, dim=2), whole, **TOL)
        assert state.shape[-1] == dv + normalize  # the normaliser's column


@pytest.mark.parametrize("limit", [None, 0, 1, 5])
def test_token_cache_keeps_what_a_list_would(limit, monkeypatch):
    monkeypatch.setattr(ops.cache, "GROWING_SPARE", 4)  # a growing cache doubles several times below
    g = torch.Generator().manual_seed(5)
    tokens = torch.randn(2, 3, 60, 4, generator=g)
    cache = ops.TokenCache(tokens[:, :, :7], limit)
    kept = list(range(7))[-limit:] if limit else ([] if limit == 0 else list(range(7)))
    assert torch.equal(cache.view(), tokens[:, :, kept])
    for t in range(7, 60):  # past the growing cache's spare room (it doubles) and many slides of the window
        seen = cache.extend(tokens[:, :, t : t + 1])
        assert torch.equal(seen, tokens[:, :, kept + [t]])
        kept = (kept + [t])[-limit:] if limit else ([] if limit == 0 else kept + [t])
        assert cache.length == len(kept) and cache.numbers() == 3 * len(kept) * 4
    assert cache.nbytes() == 2 * cache.numbers() * 4 <= cache.allocated_bytes()


def test_decode_state_counts_numbers_per_example():
    state = DecodeState(7, s=torch.zeros(3, 2, 4, 5), x=torch.zeros(3, 6, dtype=torch.complex64),
                        k=ops.TokenCache(torch.zeros(3, 2, 7, 4), limit=5))
    assert state.numbers() == 2 * 4 * 5 + 2 * 6 + 2 * 5 * 4
    assert state.nbytes() == 3 * (40 * 4 + 6 * 8 + 40 * 4)
    assert state.position == 7 and "DecodeState(position=7" in repr(state)


# -- cab bench directions=[decode] ------------------------------------------------------------


def bench_config(tmp_path, *overrides):
    from conftest import compose

    return compose(["pattern=causal_self", "directions=[decode]", "lengths=[16,32,64]", "dim=32", "num_heads=4",
                    "decode.tokens=3", "decode.warmup=1", "isolate=false", "lock=null", "threads=1",
                    f"results_dir={tmp_path}", *overrides], config_name="bench")


@pytest.mark.parametrize("name", ["linear", "softmax"])
def test_bench_decode_records_time_per_token_and_the_state(name, tmp_path):
    from cab.bench.job import run_bench
    from cab.results.records import validate

    (record,) = run_bench(bench_config(tmp_path, f"attention={name}"), log=lambda line: None)
    assert record["status"] == "ok", record["error"]
    assert validate(record) == [] and record["kind"] == "efficiency"
    eff = record["efficiency"]
    assert eff["direction"] == "decode" and eff["model"] == "layer" and eff["tokens"] == 3
    layer = build_attention(name, dim=32, num_heads=4, pattern="causal_self")
    for point in eff["points"]:
        assert point["status"] == "ok" and point["repeats"] == 3 and point["time_median_s"] > 0
        assert point["cpu_time_median_s"] > 0 and point["prefill_s"] > 0
        assert point["state_numbers"] == layer.state_size(point["length"])
        assert point["peak_memory_bytes"] == point["state_numbers"] * 4  # batch 1, float32
    assert eff["derived"]["memory_exponent"] == pytest.approx(1.0 if name == "softmax" else 0.0, abs=1e-9)
    assert record["metrics"]["time_exponent"] is not None and "flops_exponent" not in record["metrics"]
    assert eff["derived"]["cpu_time_exponent"] is not None


@pytest.mark.skipif(not os.environ.get("CAB_DATA_DIR"), reason="the lm model needs Tiny Shakespeare's vocabulary: "
                    "run `cab data download` and set CAB_DATA_DIR")
def test_bench_decode_of_the_lm_model(tmp_path):
    from cab.bench.job import run_bench

    config = bench_config(tmp_path, "attention=sliding_window", "attention.window=8", "decode.model=lm",
                          "decode.lm_scale=smoke", "batch=2", "lengths=[16,32]")
    (record,) = run_bench(config, log=lambda line: None)
    assert record["status"] == "ok", record["error"]
    eff = record["efficiency"]
    assert eff["model"] == "lm" and (eff["dim"], eff["num_heads"]) == (32, 2) and eff["lm"]["num_layers"] == 1
    assert [p["state_numbers"] for p in eff["points"]] == [2 * 32 * 8] * 2  # one layer's window, full at 16
    assert all(p["peak_memory_bytes"] == 2 * 2 * 32 * 8 * 4 for p in eff["points"])  # batch 2


def test_bench_decode_in_its_worker_process(tmp_path):
    """On CPU (isolate auto) a job's decode points run in one worker process."""
    from cab.bench.job import run_bench

    (record,) = run_bench(bench_config(tmp_path, "attention=mamba", "isolate=auto", "lengths=[8,16]"),
                          log=lambda line: None)
    assert record["status"] == "ok", record["error"]
    assert [p["status"] for p in record["efficiency"]["points"]] == ["ok", "ok"]


def test_bench_decode_unsupported_and_forward_run_ids(tmp_path):
    from cab.bench.job import run_bench

    def fake(config, attention, hparams, pattern, length, direction):
        return {"length": length, "status": "ok", "time_median_s": 1e-3 * length, "time_iqr_s": 0.0,
                "peak_memory_bytes": 1000 * length, "flops": 10 * length, "error": None, "repeats": 1}

    (noncausal,) = run_bench(bench_config(tmp_path, "attention=linear", "pattern=noncausal_self"), fake, log=print)
    assert noncausal["status"] == "unsupported" and "causal_self" in noncausal["reason"]
    (agent,) = run_bench(bench_config(tmp_path, "attention=agent"), fake, log=print)
    assert agent["status"] == "unsupported" and agent["reason"] == attention_spec("agent").unsupported[Pattern.CAUSAL_SELF]
    # the decode settings are no part of a forward record's identity: changing them reruns nothing
    forward = [run_bench(bench_config(tmp_path / str(i), "attention=linear", "directions=[forward]", f"decode.tokens={n}"),
                         fake, log=print)[0] for i, n in enumerate((3, 7))]
    assert forward[0]["run_id"] == forward[1]["run_id"] and "decode" not in forward[0]["config"]
