"""Schemas of everything a user sets, checked before any job starts (pydantic, strict types).

- `cab run`: the top-level keys (`RunConfig`), `trainer` (`Trainer`), `logger` (`Logger`), the
  launcher's basics (`Launcher`, the `hydra.launcher` node the launcher presets set);
- `cab bench`: `BenchConfig` (lengths, batch, dtype, device, repetitions, ...);
- `attention`: one model per registered attention, made from its class's `__init__` signature and
  annotations (`attention_schema`), so a plugin's hyperparameters are checked with no extra code;
- `task`: one model per registered task, from its `__init__` signature and annotations plus the
  ranges and cross-field checks the task class declares (`Task.param_constraints`,
  `Task.check_params`; `task_schema`).

Ranges not declared by a class come from `NAME_RULES` (probabilities in [0, 1], lengths and sizes
>= 1, other integers >= 0). `validate_run` / `validate_bench` take one resolved config (a plain
dict) and raise `ConfigError`, whose message is one line: the key, the value given and what is
allowed. `cab.config.check_overrides` composes the configs of a run or a sweep and calls them.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import types
import typing
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from cab.patterns import Pattern
from cab.distributed.config import Distributed, check_distributed
from cab.registry import LENGTH_HPARAM, ChoiceError, ParamError, attention_spec, task_spec


class ConfigError(ChoiceError):
    """A config value that no job may start with; the message is one line."""


# ---------------------------------------------------------------------------------------------
# building blocks

Count = Annotated[int, Field(ge=1)]  # steps, batch sizes, lengths, widths
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PatternName = Literal[tuple(p.value for p in Pattern)]

# Ranges by parameter name, for task parameters and attention hyperparameters whose class declares
# none (Task.param_constraints, an attention class's `hparam_constraints`). The first rule whose
# pattern matches the whole name, whose kind of number (float, or any: object) matches the
# annotation and which the class's default obeys applies (to lists of numbers too); integers
# matching no rule must be >= 0 (where the default is). A class declares `{name: {}}` to lift a rule.
NAME_RULES: list[tuple[str, type, dict[str, Any]]] = [  # (name pattern, numbers it applies to, range)
    (r"dropout|.*_dropout|.*_rate|.*_density|.*_prob|.*_probability|.*_ratio", float, {"ge": 0, "le": 1}),
    (r"eps|.*_eps", float, {"ge": 0}),
    (r"seq_len|max_len|.*_length|vocab_size|d_model|dim|num_heads|num_layers|num_kv_pairs|.*_examples"
     r"|.*batch_size", object, {"ge": 1}),
    # structural sizes of the mechanisms: a block, chunk, kernel, state or feature count of 0 builds
    # nothing (a halo or a window of 0 is meaningful, so those names are not here)
    (r"block_size|bucket_size|region_size|group_size|pool_size|window_size|chunk_size|query_chunk|kernel_block"
     r"|kernel_size|.*_kernel_size|dilation|interval|expand|d_state|d_conv|feature_dim|proj_len|segment_blocks"
     r"|num_(slots|agents|gaussians|proposals|features|hashes|landmarks|latents|compressed)|top_?k|factor",
     object, {"ge": 1}),
]
INT_RULE: dict[str, Any] = {"ge": 0}


class _Strict(BaseModel):
    """Strict types (no "5" for 5, no 1 for true; an int is a float), unknown keys rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=False, protected_namespaces=())


def _check_device(value: str) -> str:
    """`auto`, `cpu`, or a device this machine has (`cuda`, `cuda:N`, `mps`)."""
    if value in ("auto", "cpu"):
        return value
    cuda = re.fullmatch(r"cuda(?::(\d+))?", value)
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise ParamError("device", "this machine has no CUDA device (torch.cuda.is_available() is False); "
                                       "valid here: auto, cpu")
        count = torch.cuda.device_count()
        if cuda.group(1) is not None and int(cuda.group(1)) >= count:
            raise ParamError("device", f"this machine has {count} CUDA device(s); "
                                       f"valid here: auto, cpu, cuda, {', '.join(f'cuda:{i}' for i in range(count))}")
        return value
    if value == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ParamError("device", "this machine has no MPS device; valid here: auto, cpu")
        return value
    raise ParamError("device", "expected auto, cpu, cuda, cuda:N or mps")


def _writable(key: str):
    from cab.config import writable_dir_problem

    def check(value):
        if value is not None:
            problem = writable_dir_problem(str(value))
            if problem:
                raise ParamError(key, f"cannot create or write a directory there ({problem}); "
                                      f"expected a writable directory")
        return value

    return check


# ---------------------------------------------------------------------------------------------
# cab run


class Trainer(_Strict):
    """`trainer`: the optimiser and schedule of a training job (conf/trainer/*.yaml)."""

    name: str
    steps: Count
    batch_size: Count
    lr: Union[PositiveFloat, Literal["select"]]  # "select": chosen from lr_grid on a validation split
    lr_grid: Optional[Annotated[list[PositiveFloat], Field(min_length=1)]] = None
    lr_select_seed: NonNegativeInt = 0
    weight_decay: NonNegativeFloat = 0.0
    betas: Optional[Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]] = None
    warmup_steps: NonNegativeInt = 0
    grad_clip: Optional[PositiveFloat] = None
    log_every: Count = 10
    max_seconds: Optional[NonNegativeFloat] = None  # 0 or null: no limit
    eval_every: Optional[Count] = None
    early_stop_at: Optional[float] = None
    early_stop_metric: Optional[str] = None
    early_stop_patience: Optional[Count] = None
    restore_best: bool = False

    @model_validator(mode="after")
    def _grid_when_selecting(self):
        if self.lr == "select" and not self.lr_grid:
            raise ValueError("lr_grid: expected a list of learning rates when lr is 'select'")
        return self


class Logger(_Strict):
    """`logger`: none, or a wandb mirror of each job."""

    model_config = ConfigDict(extra="allow")
    name: Literal["none", "wandb"]
    project: Optional[str] = None
    mode: Optional[Literal["offline", "online", "disabled"]] = None
    entity: Optional[str] = None
    dir: Optional[str] = None


class Launcher(_Strict):
    """The basics of `hydra.launcher` that the launcher presets set (conf/launcher/*.yaml)."""

    model_config = ConfigDict(extra="allow")
    n_jobs: Optional[int] = None  # joblib: -1 is every core
    timeout_min: Optional[Count] = None
    cpus_per_task: Optional[Count] = None
    gpus_per_node: Optional[NonNegativeInt] = None
    tasks_per_node: Optional[Count] = None
    nodes: Optional[Count] = None
    mem_gb: Optional[PositiveFloat] = None
    array_parallelism: Optional[Count] = None

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, value):
        if value == 0:
            raise ParamError("n_jobs", "expected a positive number of processes, or -1 for every core")
        return value


FailMode = Literal["exception", "nan", "oom", "timeout", "kill"]


class Debug(_Strict):
    fail: Optional[FailMode] = None

    @field_validator("fail", mode="before")
    @classmethod
    def _nan(cls, value):  # YAML reads `nan` as a float NaN
        return "nan" if isinstance(value, float) and math.isnan(value) else value


class RunConfig(_Strict):
    """The top level of `cab run`'s config (conf/config.yaml); `attention` and `task` are checked
    against the chosen attention's and task's own schemas."""

    model_config = ConfigDict(extra="allow")  # experiment files may add keys of their own (grid: ...)
    attention: dict
    task: dict
    pattern: PatternName
    trainer: Trainer
    logger: Logger = Logger(name="none")
    seed: NonNegativeInt = 0
    results_dir: str
    force: bool = False
    retry_failed: bool = False
    device: str = "auto"
    threads: Optional[Count] = None
    cpu_allocator: Optional[Literal["held", "default"]] = None
    leaderboard_out: Optional[str] = None
    save_checkpoint: bool = False  # the trained weights for `cab generate` (cab/run/generate.py)
    imports: list[str] = []
    debug: Debug = Debug()
    distributed: Distributed = Distributed()  # sequence parallelism (cab/distributed/config.py)

    _results_dir = field_validator("results_dir")(_writable("results_dir"))
    _leaderboard_out = field_validator("leaderboard_out")(_writable("leaderboard_out"))
    _device = field_validator("device")(_check_device)


# ---------------------------------------------------------------------------------------------
# cab bench


class DecodeSettings(_Strict):
    """`cab bench`'s `decode` node: settings of directions=[decode] (cab/bench/decode.py)."""

    model: Literal["layer", "lm"] = "layer"
    lm_scale: Optional[Literal["smoke", "cpu", "paper"]] = None
    tokens: Count = 32
    warmup: NonNegativeInt = 4


class BenchConfig(_Strict):
    """`cab bench`'s config (conf/bench.yaml and conf/bench/*.yaml)."""

    model_config = ConfigDict(extra="allow")
    attention: dict
    pattern: PatternName
    lengths: Optional[list[Count]] = None
    directions: Annotated[list[Literal["forward", "forward_backward", "decode"]],
                          Field(min_length=1, description="a non-empty list of valid directions: forward, "
                                                          "forward_backward, decode")
                          ] = ["forward", "forward_backward"]
    decode: DecodeSettings = DecodeSettings()
    seed: NonNegativeInt = 0
    results_dir: str
    force: bool = False
    imports: list[str] = []
    lock: Optional[str] = None
    lock_scope: Literal["job", "point"] = "job"
    isolate: Union[Literal["auto"], bool, None] = "auto"
    scale: Optional[str] = None
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16", "float64"] = "float32"
    batch: Count
    num_heads: Count
    dim: Count
    threads: Optional[Count] = None
    min_length: Count = 256
    max_length: Count = 32768
    warmup: NonNegativeInt = 0
    repeats: Count = 1
    min_repeats: Count = 1
    max_seconds_per_point: Optional[PositiveFloat] = None
    point_timeout_s: Optional[PositiveFloat] = None
    memory_limit_gb: Optional[PositiveFloat] = None
    distributed: Distributed = Distributed()  # sequence parallelism (cab/distributed/config.py)

    _results_dir = field_validator("results_dir")(_writable("results_dir"))
    _device = field_validator("device")(_check_device)

    @model_validator(mode="after")
    def _cross(self):
        if self.dim % self.num_heads:
            raise ParamError("dim", f"must be a multiple of num_heads ({self.num_heads})")
        if not self.lengths and self.max_length < self.min_length:
            raise ParamError("max_length", f"must be >= min_length ({self.min_length})")
        return self


# ---------------------------------------------------------------------------------------------
# schemas made from signatures: attentions and tasks


def _annotations(func) -> dict[str, Any]:
    """Parameter annotations of `func`, evaluated (string annotations too); Any where one cannot be."""
    try:
        return {n: p.annotation for n, p in inspect.signature(func, eval_str=True).parameters.items()}
    except Exception:  # noqa: BLE001 - a name only imported for type checking: evaluate one by one
        namespace = dict(getattr(inspect.getmodule(func), "__dict__", {}))
        out = {}
        for name, param in inspect.signature(func).parameters.items():
            ann = param.annotation
            if isinstance(ann, str):
                try:
                    ann = eval(ann, namespace)  # noqa: S307 - the class's own annotation
                except Exception:  # noqa: BLE001
                    ann = Any
            out[name] = ann
        return out


def _union_args(tp) -> tuple | None:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(tp)
    return None


def _constrain(tp, rule: dict[str, Any]):
    """`tp` with the range `rule` applied to its numbers (inside unions and lists too)."""
    if not rule:
        return tp
    if tp is int or tp is float:
        return Annotated[tp, Field(**rule)]
    args = _union_args(tp)
    if args is not None:
        return Union[tuple(_constrain(a, rule) for a in args)]
    if typing.get_origin(tp) is list and typing.get_args(tp):
        return list[_constrain(typing.get_args(tp)[0], rule)]
    return tp


def _is_number_type(tp) -> bool:
    if tp is int or tp is float:
        return True
    args = _union_args(tp)
    if args is not None:
        return any(_is_number_type(a) for a in args)
    return typing.get_origin(tp) is list and bool(typing.get_args(tp)) and _is_number_type(typing.get_args(tp)[0])


def _has_int(tp) -> bool:
    if tp is int:
        return True
    args = _union_args(tp)
    if args is not None:
        return any(_has_int(a) for a in args)
    return typing.get_origin(tp) is list and bool(typing.get_args(tp)) and _has_int(typing.get_args(tp)[0])


def _param_type(name: str, annotation, default, declared: dict[str, Any] | None):
    """The checked type of one constructor parameter: its annotation (or its default's type), with
    the class's declared constraint for it, else the first matching NAME_RULES range."""
    if annotation is inspect.Parameter.empty or annotation is None:
        if isinstance(default, bool):
            annotation = bool
        elif isinstance(default, int):
            annotation = int
        elif isinstance(default, float):
            annotation = float
        elif isinstance(default, str):
            annotation = str
        else:
            annotation = Any
    if declared is not None:
        rule = dict(declared)
        choices = rule.pop("choices", None)
        if choices is not None:
            annotation = Literal[tuple(choices)]
            if default is None:
                annotation = Optional[annotation]
        return _constrain(annotation, rule)
    if typing.get_origin(annotation) is Annotated:  # the class states its range itself
        return annotation
    if _is_number_type(annotation):
        for pattern, kind, rule in NAME_RULES:
            if (re.fullmatch(pattern, name) and (kind is object or not _has_int(annotation))
                    and _satisfies(default, rule)):
                return _constrain(annotation, rule)
        if _has_int(annotation) and _satisfies(default, INT_RULE):
            return _constrain(annotation, INT_RULE)
    return annotation


def _satisfies(default: Any, rule: dict[str, Any]) -> bool:
    """Whether a class's default obeys a name rule (a rule its own default breaks does not apply)."""
    values = default if isinstance(default, (list, tuple)) else [default]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if (("ge" in rule and value < rule["ge"]) or ("gt" in rule and value <= rule["gt"])
                or ("le" in rule and value > rule["le"]) or ("lt" in rule and value >= rule["lt"])):
            return False
    return True


def _field_name(name: str) -> str:
    return f"p_{name}"  # a parameter may be called `copy`, `json`, ...: fields get a prefix, the key an alias


def _make_model(model_name: str, base: type[BaseModel], params: dict[str, tuple[Any, Any]], open_: bool,
                declared: dict[str, dict[str, Any]]) -> type[BaseModel]:
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for name, (annotation, default) in params.items():
        if name in declared and declared[name] is None:
            continue  # declared None: a base class's parameter that this class does not take
        tp = _param_type(name, annotation, default, declared.get(name))
        fields[_field_name(name)] = (tp, Field(default=None if default is inspect.Parameter.empty else default,
                                               alias=name, validate_default=False))
    model = create_model(model_name, __base__=base, **fields)
    if open_:
        model.model_config = {**model.model_config, "extra": "allow"}
        model.model_rebuild(force=True)
    return model


class AttentionHparams(_Strict):
    """Base of the per-attention schemas: `name` plus the class's keyword hyperparameters."""

    attention_name: ClassVar[str] = "?"
    p_name: str = Field(alias="name")


class TaskParams(_Strict):
    """Base of the per-task schemas: `name`, the constructor's parameters, the task's own checks."""

    task_cls: ClassVar[type | None] = None
    task_name: ClassVar[str] = "?"
    p_name: str = Field(alias="name")

    @model_validator(mode="after")
    def _task_checks(self):
        check = getattr(self.task_cls, "check_params", None)
        if check is not None:
            check(self.model_dump(by_alias=True))
        return self


_SKIP_ATTENTION = {"self", "dim", "num_heads", "pattern"}
_SKIP_TASK = {"self", "pattern", "seed"}


def _init_params(cls: type, skip: set[str], stop: type | None) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """Named keyword parameters of `cls.__init__` ({name: (annotation, default)}) and whether any key
    is accepted. A `**kwargs` passed on to a base class's __init__ adds that class's parameters; at
    `stop` (the Task base, whose **params carries the task's values) the chain ends closed. A class
    that does not define __init__ below `stop` takes any key."""
    params: dict[str, tuple[Any, Any]] = {}
    mro = [c for c in cls.__mro__ if "__init__" in c.__dict__]
    if stop is not None and mro and mro[0] is stop:
        return params, True
    for klass in mro:
        if stop is not None and klass is stop:
            return params, False
        init = klass.__dict__["__init__"]
        annotations = _annotations(init)
        var_keyword = False
        for name, p in inspect.signature(init).parameters.items():
            if p.kind is p.VAR_KEYWORD:
                var_keyword = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in skip and name not in params:
                params[name] = (annotations.get(name, p.annotation), p.default)
        if not var_keyword:
            return params, False
        if stop is None:
            return params, True  # attentions: a **kwargs takes anything (as build_attention does)
    return params, stop is None


@functools.lru_cache(maxsize=None)
def _attention_schema(cls: type, name: str) -> type[BaseModel]:
    params, open_ = _init_params(cls, _SKIP_ATTENTION, stop=None)
    if LENGTH_HPARAM in params:  # null in the config: the task's longest length (cab.run.factory)
        annotation, default = params[LENGTH_HPARAM]
        params[LENGTH_HPARAM] = (Optional[annotation if annotation is not inspect.Parameter.empty else int], default)
    declared = dict(getattr(cls, "hparam_constraints", None) or {})
    model = _make_model(f"Attention_{name}", AttentionHparams, params, open_, declared)
    model.attention_name = name
    return model


def attention_schema(name: str) -> type[BaseModel]:
    """The schema of attention `name`'s config node: `name` and its hyperparameters, their types from
    the class's __init__ annotations (or defaults) and ranges from `hparam_constraints` / NAME_RULES."""
    spec = attention_spec(name)
    return _attention_schema(spec.cls, name)


@functools.lru_cache(maxsize=None)
def _task_schema(cls: type, name: str) -> type[BaseModel]:
    from cab.task import Task

    params, open_ = _init_params(cls, _SKIP_TASK, stop=Task)
    declared = {}
    for klass in reversed(cls.__mro__):  # a subclass's declarations refine its base's
        declared.update(klass.__dict__.get("param_constraints") or {})
    model = _make_model(f"Task_{name}", TaskParams, params, open_, declared)
    model.task_cls = cls
    model.task_name = name
    return model


def task_schema(name: str) -> type[BaseModel]:
    """The schema of task `name`'s config node: its constructor's parameters (types from annotations
    or defaults), the ranges it declares in `param_constraints` (else NAME_RULES), `check_params`."""
    spec = task_spec(name)
    return _task_schema(spec.cls, name)


# ---------------------------------------------------------------------------------------------
# one-line messages


def fmt(value: Any) -> str:
    """A value as it is typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


_PLURAL = {"an integer": "integers", "a number": "numbers", "a string": "strings", "a mapping": "mappings",
           "true or false": "booleans", "one of:": "values from:"}


def _bounds(metadata) -> str:
    lo = hi = None
    for m in metadata:
        for attr, side in (("ge", "["), ("gt", "(")):
            if getattr(m, attr, None) is not None:
                lo = (side, getattr(m, attr))
        for attr, side in (("le", "]"), ("lt", ")")):
            if getattr(m, attr, None) is not None:
                hi = (side, getattr(m, attr))
    if lo and hi:
        return f" in {lo[0]}{fmt(lo[1])}, {fmt(hi[1])}{hi[0]}"
    if lo:
        return f" {'>=' if lo[0] == '[' else '>'} {fmt(lo[1])}"
    if hi:
        return f" {'<=' if hi[0] == ']' else '<'} {fmt(hi[1])}"
    return ""


def describe(tp, metadata=()) -> str:
    """What a type allows, in words: 'an integer >= 1', 'null or a number in [0, 1]', 'one of: a, b'."""
    metadata = list(metadata)
    if typing.get_origin(tp) is Annotated:
        inner, *extra = typing.get_args(tp)
        for item in extra:
            metadata.extend(getattr(item, "metadata", None) or [item])
        return describe(inner, metadata)
    args = _union_args(tp)
    if args is not None:
        present = [a for a in args if a is not type(None)]
        text = " or ".join(describe(a, metadata) for a in present)
        return f"null or {text}" if len(present) < len(args) else text
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of: " + ", ".join(fmt(a) for a in typing.get_args(tp))
    if origin is list or tp is list:
        inner = typing.get_args(tp)
        if not inner:
            return "a list"
        item = describe(inner[0])
        for singular, plural in _PLURAL.items():
            if item.startswith(singular):
                item = plural + item[len(singular):]
        return f"{_list_size(metadata)} {item}"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer" + _bounds(metadata)
    if tp is float:
        return "a number" + _bounds(metadata)
    if tp is str:
        return "a string"
    if tp is dict or origin is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping with keys: " + ", ".join(f.alias or n for n, f in tp.model_fields.items())
    return "any value"


def _list_size(metadata) -> str:
    lo = next((m.min_length for m in metadata if getattr(m, "min_length", None) is not None), None)
    hi = next((m.max_length for m in metadata if getattr(m, "max_length", None) is not None), None)
    if lo is not None and lo == hi:
        return f"a list of {lo}"
    if lo == 1:
        return "a non-empty list of"
    if lo:
        return f"a list of at least {lo}"
    return "a list of"


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return sorted(info.alias or name for name, info in model.model_fields.items())


def _lookup(data: Any, path: list) -> Any:
    for part in path:
        data = data[part]
    return data


def _owner(model: type[BaseModel], prefix: str) -> tuple[str, str]:
    """(what a config node is, what its keys are called), for messages."""
    if issubclass(model, AttentionHparams):
        return f"attention {model.attention_name}", "hyperparameter"
    if issubclass(model, TaskParams):
        return f"task {model.task_name}", "parameter"
    return (f"'{prefix.rstrip('.')}'" if prefix else "the config"), "key"


def _message(error: dict, model: type[BaseModel], data: dict, prefix: str) -> str:
    """The one-line message for a pydantic error on `data` validated by `model`: key=value, then
    what is allowed (the valid names for an unknown key)."""
    loc = list(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    owner, noun = _owner(model, prefix)
    context = f" ({owner})" if noun != "key" else ""
    if isinstance(cause, ParamError):  # a validator named its key: the field's own, or a cross-field one
        path = loc if loc else [int(p) if p.isdigit() else p for p in cause.key.split(".")]
        key = prefix + ".".join(map(str, path))
        try:
            value = _lookup(data, path)
        except (KeyError, IndexError, TypeError):
            value = error.get("input")
        return f"{key}={fmt(value)}{context}: {cause.message}"
    # walk down nested models to the field the error is about (a list index or union tag ends it)
    path: list = []
    current: type[BaseModel] | None = model
    info = None
    for part in loc:
        if isinstance(part, int) or current is None:
            break
        info = _field(current, str(part))
        if info is None:
            if error["type"] == "extra_forbidden":
                path.append(part)
            break
        path.append(part)
        sub = info.annotation
        current = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
    key = prefix + ".".join(map(str, path))
    if error["type"] == "extra_forbidden":
        parent = _lookup_model(model, path[:-1]) or model
        sub_owner, sub_noun = _owner(parent, prefix + "".join(f"{p}." for p in path[:-1]))
        valid = ", ".join(k for k in _keys(parent) if not (k == "name" and sub_noun != "key"))
        return f"{key}={fmt(error.get('input'))}: {sub_owner} has no {sub_noun} {path[-1]!r}; valid: {valid or '(none)'}"
    try:
        value = _lookup(data, path)
    except (KeyError, IndexError, TypeError):
        value = error.get("input")
    if info is not None and info.description:
        allowed = info.description
    elif info is not None:
        allowed = describe(info.annotation, info.metadata)
    else:
        allowed = error.get("msg", "a valid value")
    if error["type"] == "missing":
        return f"{key} is missing{context}; expected {allowed}"
    if isinstance(cause, Exception):
        return f"{key}={fmt(value)}{context}: {cause}"
    return f"{key}={fmt(value)}{context}: expected {allowed}"


def _lookup_model(model: type[BaseModel], path: list) -> type[BaseModel] | None:
    current = model
    for part in path:
        info = _field(current, str(part))
        sub = info.annotation if info is not None else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        current = sub
    return current


def _validate(model: type[BaseModel], data: dict, prefix: str = "") -> None:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0], model, data, prefix)) from None


def validate_attention(node: dict) -> None:
    """Check an `attention` node against its attention's schema (ConfigError on the first problem)."""
    _validate(attention_schema(node.get("name")), node, "attention.")


def validate_task(node: dict) -> None:
    """Check a `task` node against its task's schema (ConfigError on the first problem)."""
    _validate(task_schema(node.get("name")), node, "task.")


def validate_launcher(node: dict | None) -> None:
    if node:
        _validate(Launcher, node, "hydra.launcher.")


def validate_run(config: dict) -> None:
    """Check one resolved `cab run` config; ConfigError (one line) on the first problem."""
    _validate(RunConfig, config)
    validate_attention(config["attention"])
    validate_task(config["task"])
    check_distributed(config, "run")


def validate_bench(config: dict) -> None:
    """Check one resolved `cab bench` config; ConfigError (one line) on the first problem."""
    _validate(BenchConfig, config)
    validate_attention(config["attention"])
    check_distributed(config, "bench")
    bound = config["attention"].get(LENGTH_HPARAM)
    lengths = config.get("lengths")
    if bound is not None and lengths and max(lengths) > bound:
        raise ConfigError(f"lengths={fmt(lengths)}: attention {config['attention']['name']} is built for "
                          f"{LENGTH_HPARAM}={bound}; expected lengths <= {bound} (or attention.{LENGTH_HPARAM}=null)")


def unknown_key_message(key: str, value: str, config: dict) -> str:
    """The one-line message for an override of a key that no config has (`attention.foo=1`): the
    valid hyperparameter names of the chosen attention, parameters of the task, or keys of the node."""
    head, _, rest = key.partition(".")
    if head in ("attention", "task") and rest and "." not in rest and isinstance(config.get(head), dict):
        name = config[head].get("name")
        model = attention_schema(name) if head == "attention" else task_schema(name)
        owner, noun = _owner(model, head)
        valid = ", ".join(k for k in _keys(model) if k != "name")
        return f"{key}={value}: {owner} has no {noun} {rest!r}; valid: {valid or '(none)'}"
    parent, _, leaf = key.rpartition(".")
    node: Any = config
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        where = f"'{parent}'" if parent else "the config"
        return f"{key}={value}: {where} has no key {leaf!r}; valid: {', '.join(sorted(map(str, node)))}"
    return f"{key}={value}: no such key in the config"
