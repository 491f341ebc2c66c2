"""The synthetic tasks' generators, checked for the properties their papers define, and one smoke
run per task × pattern through `cab.run.runner.run_job` on a composed config.

MQAR (Zoology), mqar_cross (ours), gCOG (Ito et al. 2024), ListOps (LRA). Every property here
could fail: labels are recomputed from the inputs by independent code, placement statistics are
compared with an explicit sampler, splits are checked for overlap.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cab import Pattern
from cab.run.factory import AttentionFactory
from cab.tasks import gcog, listops
from cab.tasks.mqar import MQARTask, multiquery_ar
from cab.tasks.mqar_cross import MQARCrossTask, split_source_target

# ---------------------------------------------------------------------------------------------
# MQAR


def _rows(t: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in t}


def test_mqar_every_query_label_is_its_keys_value():
    kv, length, vocab = 8, 128, 512
    inputs, labels = multiquery_ar(200, length, kv, vocab, seed=3)
    for x, y in zip(inputs.tolist(), labels.tolist()):
        keys, values = x[0 : 2 * kv : 2], x[1 : 2 * kv : 2]
        assert len(set(keys)) == kv and len(set(values)) == kv  # distinct within the example
        assert all(1 <= k < vocab // 2 for k in keys) and all(vocab // 2 <= v < vocab for v in values)
        binding = dict(zip(keys, values))
        queried = [(i, x[i], y[i]) for i in range(2 * kv, length) if y[i] != -100]
        assert sorted(k for _, k, _ in queried) == sorted(keys)  # every key queried exactly once
        assert all(binding[k] == v for _, k, v in queried)  # its label is its value
        assert all((i - 2 * kv) % 2 == 0 for i, _, _ in queried)  # at even offsets of the query region
        assert all(y[i] == -100 for i in range(2 * kv))  # no labels in the context
        assert all(x[i] == 0 for i in range(2 * kv, length) if y[i] == -100)  # filler elsewhere


def _explicit_power_law_slots(n: int, space: int, kv: int, a: float, seed: int) -> np.ndarray:
    """Zoology's way: numpy's choice without replacement, p(i) ∝ a·i^(a-1), one example at a time."""
    rng = np.random.default_rng(seed)
    p = a * np.arange(1, space + 1) ** (a - 1)
    p /= p.sum()
    counts = np.zeros(space)
    for _ in range(n):
        counts[rng.choice(space, size=kv, replace=False, p=p)] += 1
    return counts / counts.sum()


@pytest.mark.parametrize("length,kv", [(64, 1), (64, 4), (128, 8)])
def test_mqar_query_placement_matches_the_power_law(length, kv):
    n = 20000
    inputs, labels = multiquery_ar(n, length, kv, 1024, power_a=0.01, seed=11)
    space = (length - 2 * kv) // 2
    slots = ((labels != -100).nonzero()[:, 1] - 2 * kv) // 2
    ours = np.bincount(slots.numpy(), minlength=space) / slots.numel()
    if kv == 1:  # one draw: the marginal is the power law itself (P(slot 1) ≈ 0.25 at L = 64)
        p = 0.01 * np.arange(1, space + 1) ** (0.01 - 1)
        reference = p / p.sum()
    else:  # without replacement the marginal is flatter; compare with Zoology's sequential sampler
        reference = _explicit_power_law_slots(n // 4, space, kv, 0.01, seed=5)
    # total variation: sampling noise is about 0.02; a uniform placement would give about 0.5
    assert 0.5 * np.abs(ours - reference).sum() < 0.045
    assert abs(ours[0] - reference[0]) < 0.02
    # strongly front-loaded, as Zoology's table says, yet reaching the last slots
    assert ours[0] > ours[space // 2] and ours[space - 1] > 0


def test_mqar_is_deterministic_and_train_test_disjoint():
    a = multiquery_ar(50, 64, 4, 512, seed=1)
    b = multiquery_ar(50, 64, 4, 512, seed=1)
    c = multiquery_ar(50, 64, 4, 512, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    task = MQARTask(Pattern.CAUSAL_SELF, seed=0, vocab_size=512, seq_len=64, num_kv_pairs=4,
                    train_examples=4000, test_examples=500)
    assert not _rows(task.train_data[0][0]) & _rows(task.test_data[0][0])
    assert len(_rows(task.test_data[0][0])) == 500


def test_mqar_segments_report_per_slice_accuracy_and_state_size():
    segs = [{"seq_len": 64, "num_kv_pairs": 4, "num_examples": 64}, {"seq_len": 128, "num_kv_pairs": 16, "num_examples": 64}]
    task = MQARTask(Pattern.CAUSAL_SELF, seed=0, vocab_size=512, train_segments=segs[:1], test_segments=segs, d_model=32)
    factory = AttentionFactory("linear", Pattern.CAUSAL_SELF)
    model = task.build_model(factory).eval()
    metrics = task.evaluate(model)
    assert {"accuracy/L64_kv4", "accuracy/L128_kv16", "accuracy", "loss"} <= metrics.keys()
    assert metrics["accuracy"] == pytest.approx((metrics["accuracy/L64_kv4"] + metrics["accuracy/L128_kv16"]) / 2)
    assert task.attention_lengths()[Pattern.CAUSAL_SELF] == (128, 128)
    assert len(factory.layers_under_test) == 2 and all(layer.state_size(128) > 0 for layer in factory.layers_under_test)


# ---------------------------------------------------------------------------------------------
# mqar_cross


def test_mqar_cross_source_holds_the_pairs_and_target_the_queries():
    kv = 6
    inputs, labels = multiquery_ar(100, 96, kv, 512, seed=4)
    source, target, target_labels = split_source_target(inputs, labels, kv)
    assert source.shape == (100, 2 * kv) and target.shape == (100, 96 - 2 * kv)
    for s, t, y in zip(source.tolist(), target.tolist(), target_labels.tolist()):
        binding = dict(zip(s[0::2], s[1::2]))
        queries = [(t[i], y[i]) for i in range(len(t)) if y[i] != -100]
        assert len(queries) == kv and all(binding[k] == v for k, v in queries)
        assert all(v not in t for v in binding.values())  # values only in the source: recall must cross


def test_mqar_cross_train_test_disjoint_and_causal_cross_reads_queries_in_order():
    task = MQARCrossTask(Pattern.CAUSAL_CROSS, seed=0, vocab_size=512, seq_len=64, num_kv_pairs=4,
                         train_examples=2000, test_examples=200, d_model=32, num_heads=2)
    train_src, test_src = _rows(task.train_data[0][0]), _rows(task.test_data[0][0])
    assert not train_src & test_src
    torch.manual_seed(0)
    factory = AttentionFactory("softmax", Pattern.CAUSAL_CROSS)
    model = task.build_model(factory).eval()
    roles = sorted(layer.pattern.value for layer in factory.all_layers)
    assert roles == ["causal_cross", "causal_self", "noncausal_self"]  # decoder self, cross, encoder
    source, target, _ = task.test_data[0]
    source, target = source[:4], target[:4]
    cut = 20
    full = model(source, target)[:, :cut]
    changed = target.clone()
    changed[:, cut:] = torch.randint(1, 512, changed[:, cut:].shape)
    assert torch.allclose(model(source, changed)[:, :cut], full, atol=1e-5)  # later queries do not matter
    assert torch.allclose(model(source, target[:, :cut]), full, atol=1e-5)  # truncating the queries


# ---------------------------------------------------------------------------------------------
# gCOG


def _decode(instr: torch.Tensor) -> list[gcog.Node]:
    return [gcog.Node(int(k) - 1, int(c) - 1, int(s) - 1) for k, c, s in instr.tolist() if k > 0]


def _check_labels(data: gcog.GCOGData) -> None:
    for instr, grid, label in zip(data.instr, data.grid, data.labels.tolist()):
        colours, shapes = grid[:, 0].numpy() - 1, grid[:, 1].numpy() - 1
        assert gcog.execute(_decode(instr), colours, shapes) == label  # independent interpreter agrees


@pytest.mark.parametrize("split", ["distractor", "systematic", "productive"])
def test_gcog_labels_are_the_interpreters_answers(split):
    train, tests = gcog.split_specs(split, (1, 5), (10, 40), (1, 3), (5, 7), 10, 10)
    _check_labels(gcog.generate(train, 150, seed=0, feature_colours=10, feature_shapes=10, pad_nodes=22))
    for spec in tests.values():
        _check_labels(gcog.generate(spec, 60, seed=1, feature_colours=10, feature_shapes=10, pad_nodes=22))


def test_gcog_named_objects_are_unambiguous_and_trees_have_gcog_sizes():
    rng, nprng = random.Random(0), np.random.default_rng(0)
    features = np.zeros((gcog.NUM_COLORS, gcog.NUM_SHAPES), bool)
    features[:10, :10] = True
    sizes = {1: 1, 3: 4, 5: 10, 7: 22}
    for depth, size in sizes.items():
        spec = gcog.SetSpec(depths=(depth,), distractors=(30, 30))
        for _ in range(15):
            nodes, colours, shapes, answer, d = gcog.sample_example(rng, nprng, spec, features)
            assert d == depth and len(nodes) == size == gcog.max_nodes(depth)
            for node in nodes:
                if node.kind == gcog.SWITCH or gcog.OPS[node.kind] == "exist":
                    continue
                hits = gcog._matches(colours, shapes, node)
                assert len(hits) == 1, gcog.describe(nodes)  # every named object is exactly one cell
            # depth >= 3: the root of every switch is a boolean operator
            for i, node in enumerate(nodes[:-1]):
                if node.kind == gcog.SWITCH:
                    assert gcog.OPS[nodes[i + 1].kind] in gcog.BOOL_OPS
            assert (colours >= 0).sum() >= 30 and 0 <= answer < gcog.NUM_CLASSES == 138


def test_gcog_distractor_split_counts_answer_mix_and_determinism():
    train, tests = gcog.split_specs("distractor", (1, 5), (10, 40), (1, 3), (5, 7), 10, 10)
    data = gcog.generate(tests["distractors_40"], 400, seed=7, feature_colours=10, feature_shapes=10, pad_nodes=1)
    occupied = (data.grid[..., 0] > 0).sum(1)
    assert occupied.min() >= 40 and occupied.max() <= 41  # 40 distractors + at most one named object
    few = gcog.generate(train, 400, seed=7, feature_colours=10, feature_shapes=10, pad_nodes=1)
    assert (few.grid[..., 0] > 0).sum(1).max() <= 6
    kinds = gcog.answer_type(torch.cat([data.labels, few.labels]))
    assert 0.55 < (kinds == 0).float().mean() < 0.70  # 5/8 boolean
    boolean = torch.cat([data.labels, few.labels])[kinds == 0]
    assert 0.4 < (boolean == 0).float().mean() < 0.6  # True about half the time
    assert data.labels[kinds[:400] == 2].max() < gcog.SHAPE0 + 10  # only the 10 feature shapes
    again = gcog.generate(tests["distractors_40"], 400, seed=7, feature_colours=10, feature_shapes=10, pad_nodes=1)
    assert torch.equal(again.grid, data.grid) and torch.equal(again.instr, data.instr)


def test_gcog_systematic_split_holds_out_operator_feature_and_root_leaf_combinations():
    train, tests = gcog.split_specs("systematic", (1, 5), (), (1, 3), (5, 7), 10, 10)
    kw = dict(feature_colours=10, feature_shapes=10, pad_nodes=4)
    tr = gcog.generate(train, 600, seed=0, **kw)
    d1 = gcog.generate(tests["depth1"], 300, seed=1, **kw)
    d3 = gcog.generate(tests["depth3"], 300, seed=2, **kw)
    groups = gcog.feature_groups(10, 10)

    def depth1_ok(data, pairing):
        for instr, grid in zip(data.instr[data.depths == 1], data.grid[data.depths == 1]):
            node = _decode(instr)[0]
            colours, shapes = grid[:, 0].numpy() - 1, grid[:, 1].numpy() - 1
            cell = gcog._matches(colours, shapes, node)
            c, s = (colours[cell[0]], shapes[cell[0]]) if len(cell) else (node.colour, node.shape)
            group = "A" if gcog.OPS[node.kind] in gcog.OP_GROUP_A else "B"
            assert groups[pairing[group]][c, s], (gcog.describe([node]), group)

    depth1_ok(tr, {"A": "S1", "B": "S2"})
    depth1_ok(d1, {"A": "S2", "B": "S1"})

    def pairings(data):
        out = set()
        for instr in data.instr[data.depths == 3]:
            nodes = _decode(instr)
            out |= {(gcog.OPS[nodes[1].kind], gcog.OPS[n.kind]) for n in nodes[2:]}
        return out

    train_pairs, test_pairs = pairings(tr), pairings(d3)
    assert train_pairs and test_pairs and not train_pairs & test_pairs
    # gCOG's feature groups overlap, so part of the depth-1 test set is seen in training: we report both
    train_keys = set(tr.keys)
    novel = [k not in train_keys for k in d1.keys]
    assert 0 < sum(novel) < len(novel)
    assert all(k not in train_keys for k in d3.keys)


def test_gcog_productive_split_depths_and_models():
    task = gcog.GCOGTask(Pattern.NONCAUSAL_CROSS, seed=0, split="productive", train_examples=64, test_examples=16,
                         d_model=32, num_heads=2)
    assert set(task.train_data.depths.tolist()) == {1, 3}
    assert {n: set(d.depths.tolist()) for n, d in task.test_sets.items()} == {"depth5": {5}, "depth7": {7}}
    factory = AttentionFactory("softmax", Pattern.NONCAUSAL_CROSS)
    model = task.build_model(factory).eval()
    assert isinstance(model, gcog.CrossModel) and len(factory.layers_under_test) == 1
    metrics = task.evaluate(model)
    assert {"accuracy", "accuracy/depth5", "accuracy/depth7", "accuracy/iid", "accuracy/bool"} <= metrics.keys()
    ref = task.reference_metrics()
    assert ref["accuracy/location_chance"] == 0.01 and 0 < ref["accuracy_chance"] < 0.5
    # padding in the instruction must not change the answer: padded slots are masked out
    iid = task.iid_data
    one = iid.depths == 1
    instr, grid = iid.instr[one][:4], iid.grid[one][:4]
    assert instr.shape[1] == 22 and (instr[:, 1:] == 0).all()
    single = gcog.GCOGTask(Pattern.NONCAUSAL_SELF, seed=0, split="productive", train_examples=8, test_examples=8,
                           d_model=32, num_heads=2).build_model(AttentionFactory("softmax", Pattern.NONCAUSAL_SELF))
    for m in (model, single.eval()):
        assert torch.allclose(m(instr, grid), m(instr[:, :1], grid), atol=1e-5)
    with pytest.raises(ValueError, match="single_stream"):
        gcog.GCOGTask(Pattern.NONCAUSAL_CROSS, seed=0, model="single_stream", train_examples=8, test_examples=8)


# ---------------------------------------------------------------------------------------------
# ListOps


def _argument_counts(tokens) -> list[int]:
    counts, stack = [], []
    for t in tokens:
        if t == listops.CLOSE:
            counts.append(stack.pop())
            continue
        if stack:
            stack[-1] += 1  # a digit or an operator node is one argument of the enclosing operator
        if t in listops.OP_TOKEN.values():
            stack.append(0)
    assert not stack
    return counts


def test_listops_follows_lras_rules():
    seqs, labels = listops.sample_listops(300, seed=0, min_length=20, max_length=120, max_depth=10, max_args=10)
    assert len(set(seqs)) == 300
    for s, y in zip(seqs, labels):
        assert 20 < len(s) < 120 and listops.evaluate_tokens(s) == y
        assert listops.depth_of(s) <= 10
        assert all(2 <= n <= 10 for n in _argument_counts(s))  # every operator has 2..10 arguments
    counts = np.bincount(labels, minlength=10) / len(labels)
    assert counts[0] > 0.1 and counts[9] > 0.1  # LRA's skew: MIN and MAX pile up at 0 and 9


def test_listops_operators():
    T = listops.OP_TOKEN
    d = lambda *v: [1 + x for x in v]  # noqa: E731
    assert listops.evaluate_tokens([T["MED"], *d(1, 2, 7, 9), listops.CLOSE]) == 4  # floor of (2 + 7) / 2
    assert listops.evaluate_tokens([T["SM"], *d(9, 8, 7), listops.CLOSE]) == 4
    assert listops.evaluate_tokens([T["MAX"], *d(3), T["MIN"], *d(5, 6), listops.CLOSE, listops.CLOSE]) == 5


def test_listops_splits_are_disjoint_and_reference_metric_is_majority():
    task = listops.ListOpsTask(Pattern.NONCAUSAL_SELF, seed=0, train_examples=400, test_examples=100,
                               min_length=10, max_length=60, d_model=32, num_heads=2, num_layers=1)
    train = {tuple(r[r > 0].tolist()) for r in task.train_ids}
    test = {tuple(r[r > 0].tolist()) for r in task.test_ids}
    assert len(train) == 400 and len(test) == 100 and not train & test
    ref = task.reference_metrics()
    majority = int(torch.bincount(task.train_labels, minlength=10).argmax())
    assert ref["accuracy_majority_class"] == pytest.approx(float((task.test_labels == majority).float().mean()))
    again = listops.ListOpsTask(Pattern.NONCAUSAL_SELF, seed=0, train_examples=400, test_examples=100,
                                min_length=10, max_length=60, d_model=32, num_heads=2, num_layers=1)
    assert torch.equal(again.train_ids, task.train_ids)
    for pooling in ("cls", "mean"):  # padding never changes a prediction
        t = listops.ListOpsTask(Pattern.NONCAUSAL_SELF, seed=0, train_examples=8, test_examples=8, min_length=10,
                                max_length=60, d_model=32, num_heads=2, num_layers=1, pooling=pooling)
        model = t.build_model(AttentionFactory("softmax", Pattern.NONCAUSAL_SELF)).eval()
        ids = t.test_ids[:1, : int(t.test_lengths[0])]
        padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
        assert torch.allclose(model(ids), model(padded), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# one smoke run per task × pattern, through the runner on a composed config

CELLS = [("mqar", "causal_self"), ("mqar", "noncausal_self"), ("mqar_cross", "causal_cross"),
         ("mqar_cross", "noncausal_cross"), ("gcog", "noncausal_self"), ("gcog", "noncausal_cross"),
         ("listops", "noncausal_self")]


@pytest.mark.parametrize("task,pattern", CELLS, ids=[f"{t}-{p}" for t, p in CELLS])
def test_smoke_run_per_task_and_pattern(smoke_config, task, pattern):
    from cab.run.runner import run_job

    config = smoke_config(f"task={task}", f"pattern={pattern}", "attention=linear", "trainer.steps=2")
    assert config["task"]["name"] == task and config["trainer"]["name"] == "smoke"
    record = run_job(config)
    assert record["status"] == "ok", record["error"]
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert record["reference_metrics"] and record["cost"]["flops_per_example"] > 0
    assert record["cost"]["state_size"] and record["cost"]["state_size"] > 0  # linear has a recurrent state


@pytest.mark.parametrize("name", ["zoology_fig2", "zoology_fig2_cpu", "based_mqar", "based_mqar_cpu"])
def test_mqar_experiments_compose(smoke_config, name):
    config = smoke_config(f"experiment={name}")
    task = config["task"]
    assert task["name"] == "mqar" and config["pattern"] == "causal_self"
    segments = task["train_segments"] or [{"seq_len": task["seq_len"], "num_kv_pairs": task["num_kv_pairs"]}]
    tests = task["test_segments"] or segments
    assert all(4 * s["num_kv_pairs"] <= s["seq_len"] for s in segments + tests)
    if name.startswith("based"):  # train short, test up to 4x longer with more pairs
        longest = max(s["seq_len"] for s in segments)
        assert longest == (128 if name.endswith("cpu") else 256) and max(s["seq_len"] for s in tests) == 4 * longest
        assert max(s["num_kv_pairs"] for s in tests) > max(s["num_kv_pairs"] for s in segments)
    assert config["trainer"]["early_stop_at"] is None  # leaderboard runs never stop early


@pytest.mark.parametrize("experiment,random_filler", [("zoology_fig2", False), ("based_mqar", True),
                                                      ("based_mqar_cpu", True), ("cpu_leaderboard", False)])
def test_mqar_filler_follows_each_papers_config(experiment, random_filler):
    """Zoology's figure 2 sets random_non_queries=False; Based's figure 2 keeps the generator's default
    (True: random filler tokens). The leaderboard uses Zoology's."""
    from conftest import compose

    cfg = compose([f"experiment={experiment}", "task=mqar"])
    assert cfg["task"]["random_non_queries"] is random_filler
