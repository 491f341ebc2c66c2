"""The docs' code runs: the example attention in docs/adding-an-attention.md registers and passes
the pattern contract, so the page cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from cab import Pattern, build_attention, registry

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_adding_an_attention_example_works():
    text = (DOCS / "adding-an-attention.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {"__name__": "doc_example"}
    try:
        exec(compile(code, "adding-an-attention.md", "exec"), namespace)
        for pattern in Pattern:
            layer = build_attention("sigmoid_doc_example", dim=16, num_heads=2, pattern=pattern).double().eval()
            x = torch.randn(2, 7, 16, dtype=torch.double)
            context = torch.randn(2, 9, 16, dtype=torch.double) if pattern.is_cross else None
            out = layer(x, context=context)
            assert out.shape == x.shape and torch.isfinite(out).all()
            if pattern is Pattern.CAUSAL_SELF:  # prefix test
                torch.testing.assert_close(layer(x[:, :4])[:, 3], out[:, 3])
        assert layer.flops(1, 8, 8) > 0
    finally:
        registry._ATTENTIONS.entries.pop("sigmoid_doc_example", None)
