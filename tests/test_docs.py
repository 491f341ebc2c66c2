"""The docs' code runs: the example attention in docs/adding-an-attention.md registers, builds, passes the
pattern contract and its reference test, and states the FLOPs it runs, so the page cannot drift from the API."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from cab import Pattern, attention_spec, registry

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLE = "relu_linear_doc_example"


def _test_module(filename: str):
    """A registry-wide test file as a module: its checks take (name, pattern) and build through the registry."""
    spec = importlib.util.spec_from_file_location(f"doc_{Path(filename).stem}", Path(__file__).with_name(filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adding_an_attention_example_works():
    text = (DOCS / "adding-an-attention.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {"__name__": "doc_example"}
    try:
        exec(compile(code, "adding-an-attention.md", "exec"), namespace)
        spec = attention_spec(EXAMPLE)
        assert spec.patterns == set(Pattern) and spec.cls.declares_reference()
        contract, flops = _test_module("test_attention_contract.py"), _test_module("test_flops.py")
        for pattern in Pattern:
            contract.test_shape_and_finite(EXAMPLE, pattern)
            contract.test_gradients_finite(EXAMPLE, pattern)
            contract.test_padding_per_row_equals_each_row_alone(EXAMPLE, pattern)
            contract.test_equals_its_reference(EXAMPLE, pattern)  # float64, 1e-10, padding per row
            if pattern is Pattern.CAUSAL_SELF:
                contract.test_causal_self_prefix(EXAMPLE, pattern)
                contract.test_causal_self_perturbation(EXAMPLE, pattern)
            if pattern is Pattern.CAUSAL_CROSS:
                contract.test_causal_cross_query_truncation(EXAMPLE, pattern)
            flops.test_flops_match_torch_flop_counter(EXAMPLE, pattern)  # the FLOPs the page states
        _test_module("test_decode.py").check_equivalence(EXAMPLE)  # its decode form: prefill + steps = forward
    finally:
        registry._ATTENTIONS.entries.pop(EXAMPLE, None)
