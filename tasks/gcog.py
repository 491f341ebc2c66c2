"""gCOG: generic compositional reasoning over a grid of coloured letters (Ito et al., ICLR 2024,
"On the generalization capacity of neural networks during generic multimodal reasoning";
IBM/gcog). Our own generator for the task as the paper and its repository describe it.

An example is a stimulus and an instruction; the answer is one of 138 classes.
  stimulus:     a 10×10 grid; an occupied cell holds one letter (26 shapes) in one of 10 colours.
  instruction:  a tree of the eight operators joined by IF-THEN-ELSE ("switch") nodes:
                  exist(colour, shape)      is there such an object?                 -> True/False
                  go(colour, shape)         where is it?                              -> 1 of 100 cells
                  getcolor(shape)           colour of the object with that shape      -> 1 of 10
                  getshape(colour)          shape of the object with that colour      -> 1 of 26
                  sumeven/sumodd(c, s)      is x + y of that object even / odd?       -> True/False
                  producteven/productodd    is x · y of that object even / odd?       -> True/False
                depth 1 is one operator; depth d >= 3 is `if <boolean operator> then <depth d-2>
                else <depth d-2>`: 1, 4, 10, 22 nodes at depths 1, 3, 5, 7, as in gCOG.
  answer:       [True, False] + 100 locations + 26 shapes + 10 colours = 138 classes.

Every object the instruction names is placed (both branches of every switch are executable, as in
gCOG), named objects are unambiguous (one object per named colour-shape pair; a getcolor shape /
getshape colour occurs once on the grid), exist and the parity operators are True half the time,
then `n` distractors are added that never break those rules. The answer is computed by a separate
interpreter (`execute`) on the finished grid. gCOG generates with COG's backward inference over
operator graphs; ours is a forward, constraint-keeping sampler with the same operators, tree shapes,
answer space and answer mix (5/8 boolean, 1/8 each location, shape, colour).

The three out-of-distribution splits (`split=`):
  distractor  train depth 1 with few distractors (1-5), test with 10/20/30/40 (paper Fig. 3).
  systematic  depth 1: operator groups A = {exist, sumeven, producteven, getshape} and
              B = {sumodd, productodd, go, getcolor} × feature groups S1 = all shapes × the first half
              of the colours, S2 = the second half of the shapes × all colours; train A×S1 ∪ B×S2,
              test A×S2 ∪ B×S1 (Fig. 4a). Depth 3: root families R1 = {exist, sumeven, producteven},
              R2 = {sumodd, productodd}, leaf families L1 = {sumeven, producteven, getcolor, getshape},
              L2 = {exist, sumodd, productodd, go}; train R1→L1 ∪ R2→L2, test R1→L2 ∪ R2→L1 (Fig. 4c).
              S1 and S2 overlap (as in gCOG's code), so many depth-1 test instructions also occur in
              training: we report the full test set and the subset never seen in training.
  productive  train depths 1 and 3, test depths 5 and 7 (Fig. 5).

Models (`model=`), with the attention under test swapped in (CAB's rule: softmax elsewhere):
  single_stream  instruction and grid tokens concatenated behind a class token; `num_layers`
                 noncausal self-attention blocks; the class token reads out (gCOG's SSTfmr).
  cross          an instruction encoder and a grid encoder (`num_layers` noncausal self blocks each),
                 then `cross_layers` blocks in which the instruction tokens query the grid through
                 noncausal cross attention; the class token reads out (gCOG's CrossAttn).
  auto           single_stream for pattern noncausal_self, cross for noncausal_cross.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cab import Pattern, Task, register_task
from cab.backbone import Block, CrossBlock, init_weights
from cab.task import MetricInfo, batch_indices

TEST_SEED_OFFSET = 2**31
GRID = 10  # GRIDSIZE_X = GRIDSIZE_Y
CELLS = GRID * GRID
NUM_COLORS, NUM_SHAPES = 10, 26
OPS = ("exist", "go", "getcolor", "getshape", "sumeven", "sumodd", "producteven", "productodd")
SWITCH = len(OPS)  # node kind 8; kinds are stored +1 in tokens (0 = padding)
BOOL_OPS = ("exist", "sumeven", "sumodd", "producteven", "productodd")  # gCOG's STARTING_OPS
NUM_CLASSES = 2 + CELLS + NUM_SHAPES + NUM_COLORS  # 138
LOC0, SHAPE0, COLOR0 = 2, 2 + CELLS, 2 + CELLS + NUM_SHAPES  # class offsets
ANSWER_TYPES = ("bool", "location", "shape", "colour")

# systematic split (gCOG's OperatorSystematicity and CompTreeDatasetSubset)
OP_GROUP_A = ("exist", "sumeven", "producteven", "getshape")
OP_GROUP_B = ("sumodd", "productodd", "go", "getcolor")
ROOTS_1, ROOTS_2 = ("exist", "sumeven", "producteven"), ("sumodd", "productodd")
LEAVES_1, LEAVES_2 = ("sumeven", "producteven", "getcolor", "getshape"), ("exist", "sumodd", "productodd", "go")


def answer_type(label: int | torch.Tensor):
    """0 bool, 1 location, 2 shape, 3 colour (works on ints and tensors)."""
    return (label >= LOC0) * 1 + (label >= SHAPE0) * 1 + (label >= COLOR0) * 1


# ---------------------------------------------------------------------------------------------
# the reference interpreter: instruction (prefix list of nodes) × grid -> answer class


@dataclass(frozen=True)
class Node:
    kind: int  # index into OPS, or SWITCH
    colour: int = -1  # -1: not specified
    shape: int = -1


def _matches(colours: np.ndarray, shapes: np.ndarray, node: Node) -> np.ndarray:
    hit = colours >= 0
    if node.colour >= 0:
        hit = hit & (colours == node.colour)
    if node.shape >= 0:
        hit = hit & (shapes == node.shape)
    return np.flatnonzero(hit)


def execute(nodes: list[Node], colours: np.ndarray, shapes: np.ndarray) -> int | None:
    """Answer class of a prefix instruction on a grid (colours, shapes: (100,) with -1 = empty), or
    None when the instruction is ill-posed (a named object is missing or ambiguous)."""
    pos = 0

    def run() -> int | None:
        nonlocal pos
        node = nodes[pos]
        pos += 1
        if node.kind == SWITCH:
            condition = run()
            then_answer = run()
            else_answer = run()
            if condition not in (0, 1) or then_answer is None or else_answer is None:
                return None
            return then_answer if condition == 0 else else_answer
        op = OPS[node.kind]
        cells = _matches(colours, shapes, node)
        if op == "exist":
            return 0 if len(cells) else 1
        if len(cells) != 1:
            return None
        cell = int(cells[0])
        y, x = divmod(cell, GRID)
        if op == "go":
            return LOC0 + cell
        if op == "getcolor":
            return COLOR0 + int(colours[cell])
        if op == "getshape":
            return SHAPE0 + int(shapes[cell])
        value = {"sumeven": (x + y) % 2 == 0, "sumodd": (x + y) % 2 == 1,
                 "producteven": (x * y) % 2 == 0, "productodd": (x * y) % 2 == 1}[op]
        return 0 if value else 1

    answer = run()
    return answer if pos == len(nodes) else None


def describe(nodes: list[Node]) -> str:
    """Readable prefix form, e.g. `[if exist(red,c) then go(blue,a) else getcolor(b)]`."""
    pos = 0

    def name(node: Node) -> str:
        c = f"c{node.colour}" if node.colour >= 0 else ""
        s = chr(ord("a") + node.shape) if node.shape >= 0 else ""
        return f"{OPS[node.kind]}({','.join(v for v in (c, s) if v)})"

    def run() -> str:
        nonlocal pos
        node = nodes[pos]
        pos += 1
        if node.kind == SWITCH:
            return f"[if {run()} then {run()} else {run()}]"
        return name(node)

    return run()


# ---------------------------------------------------------------------------------------------
# the generator


@dataclass
class SetSpec:
    """One data set: instruction depths, operator families and feature groups, distractors."""

    depths: tuple[int, ...] = (1,)
    distractors: tuple[int, int] = (1, 5)  # inclusive range, drawn per example
    # depth 1: a list of (operators, feature mask name) groups, one drawn per example
    depth1_groups: list[tuple[tuple[str, ...], str]] | None = None
    # depth >= 3: a list of (roots, leaves) families, one drawn per example
    tree_families: list[tuple[tuple[str, ...], tuple[str, ...]]] | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (colours, shapes) bool mask


def _structure(rng: random.Random, depth: int, roots: tuple[str, ...], leaves: tuple[str, ...]) -> list[int]:
    """Operator kinds in prefix order: depth 1 -> [leaf]; depth d -> [SWITCH, root, sub, sub]."""
    if depth == 1:
        return [OPS.index(rng.choice(leaves))]
    sub = lambda: _structure(rng, depth - 2, roots, leaves)  # noqa: E731
    return [SWITCH, OPS.index(rng.choice(roots)), *sub(), *sub()]


class _Scene:
    """The constraints an instruction puts on its grid, kept while its nodes are drawn."""

    def __init__(self):
        self.objects: dict[tuple[int, int], str | None] = {}  # (colour, shape) -> parity op or None
        self.parity_truth: dict[tuple[int, int], bool] = {}
        self.absent: set[tuple[int, int]] = set()
        self.unique_shapes: set[int] = set()  # getcolor: exactly one object of this shape
        self.unique_colours: set[int] = set()  # getshape: exactly one object of this colour

    def pair_free(self, c: int, s: int) -> bool:
        """May a new object (c, s) be added? (a named pair never occurs twice; unique features stay unique)"""
        return (c, s) not in self.objects and (c, s) not in self.absent and s not in self.unique_shapes \
            and c not in self.unique_colours

    def add(self, rng: random.Random, op: str, c: int, s: int) -> Node | None:
        """Bind node `op` to a new object (c, s) if the constraints allow; return its Node."""
        if not self.pair_free(c, s):
            return None
        if op == "getcolor":
            if any(shape == s for _, shape in self.objects):
                return None
            self.unique_shapes.add(s)
            self.objects[(c, s)] = None
            return Node(OPS.index(op), -1, s)
        if op == "getshape":
            if any(colour == c for colour, _ in self.objects):
                return None
            self.unique_colours.add(c)
            self.objects[(c, s)] = None
            return Node(OPS.index(op), c, -1)
        if op == "exist" and rng.random() < 0.5:
            self.absent.add((c, s))  # answer False: the pair must not occur
        else:
            self.objects[(c, s)] = op if op not in ("exist", "go") else None
            if op not in ("exist", "go"):
                self.parity_truth[(c, s)] = rng.random() < 0.5  # balance True/False
        return Node(OPS.index(op), c, s)


_CELL_X = np.arange(CELLS) % GRID
_CELL_Y = np.arange(CELLS) // GRID
_PARITY = {
    "sumeven": (_CELL_X + _CELL_Y) % 2 == 0, "sumodd": (_CELL_X + _CELL_Y) % 2 == 1,
    "producteven": (_CELL_X * _CELL_Y) % 2 == 0, "productodd": (_CELL_X * _CELL_Y) % 2 == 1,
}


def sample_example(rng: random.Random, nprng: np.random.Generator, spec: SetSpec, all_features: np.ndarray,
                   tries: int = 50):
    """One (nodes, colours (100,), shapes (100,), answer, depth). Retries until consistent."""
    for _ in range(100):
        depth = rng.choice(spec.depths)
        if depth == 1:
            ops, mask_name = rng.choice(spec.depth1_groups or [(OPS, "all")])
            kinds = [OPS.index(rng.choice(ops))]
            mask = spec.features.get(mask_name, all_features)
        else:
            roots, leaves = rng.choice(spec.tree_families or [(BOOL_OPS, OPS)])
            kinds = _structure(rng, depth, roots, leaves)
            mask = all_features
        allowed = np.argwhere(mask)  # (K, 2) colour, shape pairs this set may name
        scene, nodes = _Scene(), []
        for kind in kinds:
            if kind == SWITCH:
                nodes.append(Node(SWITCH))
                continue
            node = None
            for _ in range(tries):
                c, s = allowed[rng.randrange(len(allowed))]
                node = scene.add(rng, OPS[kind], int(c), int(s))
                if node is not None:
                    break
            if node is None:
                break
            nodes.append(node)
        if len(nodes) != len(kinds):
            continue  # could not bind every node: draw another instruction
        # place the named objects; a parity object goes on a cell with the drawn truth value
        colours = np.full(CELLS, -1)
        shapes = np.full(CELLS, -1)
        free = np.ones(CELLS, bool)
        for (c, s), parity in scene.objects.items():
            ok = free.copy()
            if parity is not None:
                ok &= _PARITY[parity] == scene.parity_truth[(c, s)]
            cell = int(nprng.choice(np.flatnonzero(ok)))
            colours[cell], shapes[cell], free[cell] = c, s, False
        # distractors: any feature pair that keeps every named object unambiguous
        n = min(rng.randint(*spec.distractors), int(free.sum()))
        allowed_pairs = all_features.copy()
        for c, s in [*scene.objects, *scene.absent]:
            allowed_pairs[c, s] = False
        allowed_pairs[list(scene.unique_colours), :] = False
        allowed_pairs[:, list(scene.unique_shapes)] = False
        cand = np.argwhere(allowed_pairs)  # exactly the pairs `scene.pair_free` accepts
        if n:
            picks = cand[nprng.integers(0, len(cand), n)]
            cells = nprng.choice(np.flatnonzero(free), n, replace=False)
            colours[cells], shapes[cells] = picks[:, 0], picks[:, 1]
        answer = execute(nodes, colours, shapes)
        if answer is None:  # cannot happen if the constraints are right; the tests check it
            raise AssertionError(f"gcog: ill-posed example {describe(nodes)}")
        return nodes, colours, shapes, answer, depth
    raise RuntimeError("gcog: could not draw a consistent instruction in 100 attempts")


def max_nodes(depth: int) -> int:
    return 1 if depth == 1 else 2 + 2 * max_nodes(depth - 2)


@dataclass
class GCOGData:
    instr: torch.Tensor  # (N, max_nodes, 3): kind+1, colour+1, shape+1; 0 = padding / unspecified
    grid: torch.Tensor  # (N, 100, 2): colour+1, shape+1; 0 = empty cell
    labels: torch.Tensor  # (N,) answer class
    depths: torch.Tensor  # (N,)
    keys: list[bytes]  # instruction identities (for novelty against training)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, idx: torch.Tensor) -> "GCOGData":
        return GCOGData(self.instr[idx], self.grid[idx], self.labels[idx], self.depths[idx],
                        [self.keys[i] for i in idx.tolist()])


def generate(spec: SetSpec, num_examples: int, seed: int, feature_colours: int, feature_shapes: int,
             pad_nodes: int) -> GCOGData:
    """`num_examples` examples from `spec`, deterministic from `seed`."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    all_features = np.zeros((NUM_COLORS, NUM_SHAPES), bool)
    all_features[:feature_colours, :feature_shapes] = True
    instr = torch.zeros(num_examples, pad_nodes, 3, dtype=torch.long)
    grid = np.zeros((num_examples, CELLS, 2), dtype=np.int64)
    labels = torch.zeros(num_examples, dtype=torch.long)
    depths = torch.zeros(num_examples, dtype=torch.long)
    keys = []
    for i in range(num_examples):
        nodes, colours, shapes, answer, depth = sample_example(rng, nprng, spec, all_features)
        tokens = torch.tensor([[n.kind + 1, n.colour + 1, n.shape + 1] for n in nodes])
        instr[i, : len(nodes)] = tokens
        grid[i, :, 0], grid[i, :, 1] = colours + 1, shapes + 1
        labels[i], depths[i] = answer, depth
        keys.append(tokens.numpy().tobytes())
    return GCOGData(instr, torch.from_numpy(grid), labels, depths, keys)


def feature_groups(feature_colours: int, feature_shapes: int) -> dict[str, np.ndarray]:
    """gCOG's depth-1 feature groups: S1 = all shapes × the first half of the colours, S2 = the
    second half of the shapes × all colours (they share 'second-half shapes × first-half colours')."""
    s1 = np.zeros((NUM_COLORS, NUM_SHAPES), bool)
    s2 = np.zeros((NUM_COLORS, NUM_SHAPES), bool)
    s1[: feature_colours // 2, :feature_shapes] = True
    s2[:feature_colours, feature_shapes // 2 : feature_shapes] = True
    return {"S1": s1, "S2": s2}


def split_specs(split: str, train_distractors, test_distractors, train_depths, test_depths,
                feature_colours: int, feature_shapes: int) -> tuple[SetSpec, dict[str, SetSpec]]:
    """(train spec, {test set name: spec}) for one of the three splits."""
    few = tuple(train_distractors)
    if split == "distractor":
        train = SetSpec(depths=(1,), distractors=few)
        tests = {f"distractors_{n}": SetSpec(depths=(1,), distractors=(n, n)) for n in test_distractors}
        return train, tests
    if split == "systematic":
        groups = feature_groups(feature_colours, feature_shapes)
        train = SetSpec(depths=(1, 3), distractors=few, features=groups,
                        depth1_groups=[(OP_GROUP_A, "S1"), (OP_GROUP_B, "S2")],
                        tree_families=[(ROOTS_1, LEAVES_1), (ROOTS_2, LEAVES_2)])
        tests = {
            "depth1": SetSpec(depths=(1,), distractors=few, features=groups,
                              depth1_groups=[(OP_GROUP_A, "S2"), (OP_GROUP_B, "S1")]),
            "depth3": SetSpec(depths=(3,), distractors=few, tree_families=[(ROOTS_1, LEAVES_2), (ROOTS_2, LEAVES_1)]),
        }
        return train, tests
    if split == "productive":
        train = SetSpec(depths=tuple(train_depths), distractors=few)
        tests = {f"depth{d}": SetSpec(depths=(d,), distractors=few) for d in test_depths}
        return train, tests
    raise ValueError(f"gcog: unknown split {split!r}; valid splits: distractor, systematic, productive")


# ---------------------------------------------------------------------------------------------
# models


class _Embed(nn.Module):
    """Instruction tokens: kind + colour + shape + node position; grid tokens: colour + shape +
    cell position. Colour and shape tables are shared by both streams (the same words)."""

    def __init__(self, d_model: int, max_instr: int, dropout: float):
        super().__init__()
        self.kind = nn.Embedding(SWITCH + 2, d_model)
        self.colour = nn.Embedding(NUM_COLORS + 1, d_model)
        self.shape = nn.Embedding(NUM_SHAPES + 1, d_model)
        self.instr_pos = nn.Embedding(max_instr + 1, d_model)  # + the class token
        self.cell_pos = nn.Embedding(CELLS, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.dropout = nn.Dropout(dropout)

    def instruction(self, instr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """instr (B, N, 3) -> tokens (B, 1+N, d) with the class token first, padding mask (B, 1+N)."""
        x = self.kind(instr[..., 0]) + self.colour(instr[..., 1]) + self.shape(instr[..., 2])
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
        x = x + self.instr_pos(torch.arange(x.shape[1], device=x.device))
        pad = torch.cat([torch.zeros_like(instr[:, :1, 0], dtype=torch.bool), instr[..., 0] == 0], dim=1)
        return self.dropout(x), pad

    def stimulus(self, grid: torch.Tensor) -> torch.Tensor:
        """grid (B, 100, 2) -> (B, 100, d); empty cells are tokens too (position matters)."""
        x = self.colour(grid[..., 0]) + self.shape(grid[..., 1]) + self.cell_pos.weight
        return self.dropout(x)


class SingleStreamModel(nn.Module):
    """gCOG's single-stream transformer: [CLS, instruction, grid] through noncausal self blocks."""

    def __init__(self, attention, d_model, num_heads, num_layers, mlp_ratio, max_instr, dropout):
        super().__init__()
        self.embed = _Embed(d_model, max_instr, dropout)
        self.segment = nn.Embedding(2, d_model)  # instruction / grid
        self.blocks = nn.ModuleList([Block(d_model, attention(Pattern.NONCAUSAL_SELF, d_model, num_heads), mlp_ratio, dropout)
                                     for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, NUM_CLASSES)
        init_weights(self)

    def forward(self, instr: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        rule, rule_pad = self.embed.instruction(instr)  # (B, 1+N, d)
        stim = self.embed.stimulus(grid)  # (B, 100, d)
        x = torch.cat([rule + self.segment.weight[0], stim + self.segment.weight[1]], dim=1)  # (B, 1+N+100, d)
        pad = torch.cat([rule_pad, torch.zeros(grid.shape[:2], dtype=torch.bool, device=grid.device)], dim=1)
        for block in self.blocks:
            x = block(x, pad)
        return self.head(self.norm(x[:, 0]))  # (B, 138)


class CrossModel(nn.Module):
    """gCOG's CrossAttn: instruction and grid encoders, then instruction tokens query the grid."""

    def __init__(self, attention, d_model, num_heads, num_layers, cross_layers, mlp_ratio, max_instr, dropout):
        super().__init__()
        self.embed = _Embed(d_model, max_instr, dropout)
        self_attn = lambda: attention(Pattern.NONCAUSAL_SELF, d_model, num_heads)  # noqa: E731
        self.rule_blocks = nn.ModuleList([Block(d_model, self_attn(), mlp_ratio, dropout) for _ in range(num_layers)])
        self.stim_blocks = nn.ModuleList([Block(d_model, self_attn(), mlp_ratio, dropout) for _ in range(num_layers)])
        self.stim_norm = nn.LayerNorm(d_model)
        self.cross_blocks = nn.ModuleList([
            CrossBlock(d_model, self_attn(), attention(Pattern.NONCAUSAL_CROSS, d_model, num_heads), mlp_ratio, dropout)
            for _ in range(cross_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, NUM_CLASSES)
        init_weights(self)

    def forward(self, instr: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        rule, rule_pad = self.embed.instruction(instr)  # (B, 1+N, d)
        stim = self.embed.stimulus(grid)  # (B, 100, d)
        for block in self.rule_blocks:
            rule = block(rule, rule_pad)
        for block in self.stim_blocks:
            stim = block(stim)
        stim = self.stim_norm(stim)
        for block in self.cross_blocks:
            rule = block(rule, stim, padding_mask=rule_pad)
        return self.head(self.norm(rule[:, 0]))  # (B, 138)


# ---------------------------------------------------------------------------------------------
# the task


@register_task("gcog", patterns=[Pattern.NONCAUSAL_SELF, Pattern.NONCAUSAL_CROSS])
class GCOGTask(Task):
    """gCOG (Ito et al., 2024): instruction trees over a grid; distractor, systematic and productive OOD splits."""

    primary_metric = "accuracy"
    metric_info = {
        "accuracy": MetricInfo(True, "138-way accuracy on the split's out-of-distribution test sets (mean over sets)"),
        "loss": MetricInfo(False, "cross-entropy on the out-of-distribution test sets (nats)"),
        "accuracy/iid": MetricInfo(True, "accuracy on held-out examples from the training distribution"),
        "accuracy/novel": MetricInfo(True, "systematic split: accuracy on test instructions never seen in training"),
        **{f"accuracy/{t}": MetricInfo(True, f"accuracy on the OOD test examples whose answer is a {t}") for t in ANSWER_TYPES},
    }
    param_constraints = {"split": {"choices": ["distractor", "systematic", "productive"]},
                         "model": {"choices": ["auto", "single_stream", "cross"]}}

    def __init__(self, pattern: Pattern, seed: int, split: str = "distractor", model: str = "auto",
                 train_examples: int = 40_000, test_examples: int = 2_000, train_distractors: list[int] = (1, 5),
                 test_distractors: list[int] = (10, 20, 30, 40), train_depths: list[int] = (1, 3),
                 test_depths: list[int] = (5, 7), feature_colours: int = 10, feature_shapes: int = 10,
                 d_model: int = 256, num_heads: int = 1, num_layers: int = 1, cross_layers: int = 1,
                 mlp_ratio: int = 4, dropout: float = 0.0, validation_examples: int = 0, eval_batch_size: int = 500,
                 **extra: Any):
        super().__init__(pattern, seed)
        if extra:
            raise ValueError(f"gcog: unknown parameters {sorted(extra)}")
        if model == "auto":
            model = "cross" if self.pattern is Pattern.NONCAUSAL_CROSS else "single_stream"
        if model not in ("single_stream", "cross"):
            raise ValueError(f"gcog: unknown model {model!r}; valid models: auto, single_stream, cross")
        if model == "single_stream" and self.pattern is Pattern.NONCAUSAL_CROSS:
            raise ValueError("gcog: the single_stream model has no cross attention; use model=cross (or auto) "
                             "for pattern noncausal_cross")
        self.split, self.model_name = split, model
        self.d_model, self.num_heads, self.num_layers, self.cross_layers = d_model, num_heads, num_layers, cross_layers
        self.mlp_ratio, self.dropout, self.eval_batch_size = mlp_ratio, dropout, eval_batch_size
        train_spec, test_specs = split_specs(split, train_distractors, test_distractors, train_depths, test_depths,
                                             feature_colours, feature_shapes)
        self.pad_nodes = max(max_nodes(d) for s in [train_spec, *test_specs.values()] for d in s.depths)
        make = lambda spec, n, s: generate(spec, n, s, feature_colours, feature_shapes, self.pad_nodes)  # noqa: E731
        self.train_data = make(train_spec, train_examples, seed)
        # Validation: the last `validation_examples` training examples, held out of training (in
        # distribution: what learning-rate selection reads; the OOD test sets stay unseen).
        if validation_examples >= train_examples:
            raise ValueError(f"gcog: validation_examples ({validation_examples}) must be fewer than "
                             f"train_examples ({train_examples})")
        cut = train_examples - validation_examples
        self.validation_data = self.train_data.subset(torch.arange(cut, train_examples))
        self.train_data = self.train_data.subset(torch.arange(cut))
        self.test_sets = {name: make(spec, test_examples, TEST_SEED_OFFSET + 1000 * seed + i)
                          for i, (name, spec) in enumerate(test_specs.items())}
        self.iid_data = make(train_spec, test_examples, TEST_SEED_OFFSET + 1000 * seed + 999)
        self.feature_colours, self.feature_shapes = feature_colours, feature_shapes
        train_keys = set(self.train_data.keys)
        self.novel = {name: torch.tensor([k not in train_keys for k in data.keys]) for name, data in self.test_sets.items()}

    def variant(self) -> str:
        return self.split  # the three splits measure different generalisations: separate columns

    def build_model(self, attention) -> nn.Module:
        if self.model_name == "single_stream":
            return SingleStreamModel(attention, self.d_model, self.num_heads, self.num_layers, self.mlp_ratio,
                                     self.pad_nodes, self.dropout)
        return CrossModel(attention, self.d_model, self.num_heads, self.num_layers, self.cross_layers, self.mlp_ratio,
                          self.pad_nodes, self.dropout)

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        data = self.train_data
        for idx in batch_indices(len(data), batch_size, self.epoch_generator()):
            yield data.instr[idx], data.grid[idx], data.labels[idx]

    def forward(self, model, batch):
        return model(batch[0], batch[1])

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs, batch[2])

    def tokens(self, batch) -> int:
        return int((batch[0][..., 0] > 0).sum()) + batch[1].shape[0] * (CELLS + 1)

    def example_batch(self):
        data = next(iter(self.test_sets.values()))
        return data.instr[:1], data.grid[:1], data.labels[:1]

    def attention_lengths(self):
        rule = 1 + self.pad_nodes
        if self.model_name == "single_stream":
            return {Pattern.NONCAUSAL_SELF: (rule + CELLS, rule + CELLS)}
        return {Pattern.NONCAUSAL_SELF: (CELLS, CELLS), Pattern.NONCAUSAL_CROSS: (rule, CELLS)}

    @torch.no_grad()
    def _predict(self, model, data: GCOGData) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        preds, losses = [], []
        for start in range(0, len(data), self.eval_batch_size):
            sl = slice(start, start + self.eval_batch_size)
            logits = model(data.instr[sl].to(device), data.grid[sl].to(device))
            preds.append(logits.argmax(-1).cpu())
            losses.append(F.cross_entropy(logits, data.labels[sl].to(device), reduction="none").cpu())
        return torch.cat(preds), torch.cat(losses)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        metrics: dict[str, float] = {}
        hits, losses, labels, novel = [], [], [], []
        for name, data in self.test_sets.items():
            pred, loss = self._predict(model, data)
            hit = (pred == data.labels).float()
            metrics[f"accuracy/{name}"] = hit.mean().item()
            if self.split == "systematic" and self.novel[name].any():
                metrics[f"accuracy/{name}_novel"] = hit[self.novel[name]].mean().item()
            hits.append(hit), losses.append(loss), labels.append(data.labels), novel.append(self.novel[name])
        metrics["accuracy"] = sum(h.mean().item() for h in hits) / len(hits)  # each test set weighs the same
        metrics["loss"] = sum(loss.mean().item() for loss in losses) / len(losses)
        hit, label, new = torch.cat(hits), torch.cat(labels), torch.cat(novel)
        if self.split == "systematic":
            metrics["accuracy/novel"] = hit[new].mean().item()
        kind = answer_type(label)
        for t, name in enumerate(ANSWER_TYPES):
            if (kind == t).any():
                metrics[f"accuracy/{name}"] = hit[kind == t].mean().item()
        pred, _ = self._predict(model, self.iid_data)
        metrics["accuracy/iid"] = (pred == self.iid_data.labels).float().mean().item()
        return metrics

    def has_validation(self) -> bool:
        return len(self.validation_data) > 0

    @torch.no_grad()
    def validate(self, model) -> dict[str, float]:
        """In-distribution accuracy and loss on the held-out training examples."""
        if not self.has_validation():
            return super().validate(model)
        pred, loss = self._predict(model, self.validation_data)
        return {"accuracy": (pred == self.validation_data.labels).float().mean().item(), "loss": loss.mean().item()}

    def reference_metrics(self) -> dict[str, float]:
        """Chance levels on the OOD test sets: per answer type (a uniform guess within the type), the
        overall chance of a type-aware uniform guesser, and the majority training answer; plus the
        share of test instructions never seen in training."""
        labels = torch.cat([d.labels for d in self.test_sets.values()])
        kind = answer_type(labels)
        chance = {"bool": 0.5, "location": 1 / CELLS, "shape": 1 / self.feature_shapes, "colour": 1 / self.feature_colours}
        ref = {f"accuracy/{t}_chance": chance[t] for t in ANSWER_TYPES}
        ref["accuracy_chance"] = sum(float((kind == i).float().mean()) * chance[t] for i, t in enumerate(ANSWER_TYPES))
        majority = int(torch.bincount(self.train_data.labels, minlength=NUM_CLASSES).argmax())
        ref["accuracy_majority_class"] = sum(float((d.labels == majority).float().mean()) for d in self.test_sets.values()) \
            / len(self.test_sets)
        for name, new in self.novel.items():
            ref[f"novel_instruction_fraction/{name}"] = float(new.float().mean())
        return ref
