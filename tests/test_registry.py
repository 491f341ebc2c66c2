"""The public registry API: names, patterns, errors that list the valid choices, plugins."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import cab
from cab import Pattern, build_attention, list_attentions, register_attention
from cab.registry import ChoiceError, UnsupportedPatternError


def test_pattern_values_are_the_contract():
    assert [p.value for p in Pattern] == ["noncausal_self", "causal_self", "noncausal_cross", "causal_cross"]
    assert Pattern.parse("causal_cross") is Pattern.CAUSAL_CROSS
    with pytest.raises(ValueError, match="valid patterns: noncausal_self, causal_self"):
        Pattern.parse("causal")


def test_list_attentions_sorted_and_filtered():
    names = list_attentions()
    assert names == sorted(names) and {"softmax", "linear"} <= set(names)
    for pattern in Pattern:
        subset = list_attentions(pattern=pattern.value)
        assert set(subset) <= set(names)
        assert all(pattern in cab.attention_spec(n).patterns for n in subset)


def test_build_accepts_enum_or_string():
    a = build_attention("softmax", dim=16, num_heads=2, pattern="causal_self")
    b = build_attention("softmax", dim=16, num_heads=2, pattern=Pattern.CAUSAL_SELF)
    assert a.pattern is b.pattern is Pattern.CAUSAL_SELF


def test_unknown_name_lists_choices():
    with pytest.raises(ChoiceError) as info:
        build_attention("nope", dim=16, num_heads=2, pattern="causal_self")
    message = str(info.value)
    assert "\n" not in message and "softmax" in message and "linear" in message


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(ChoiceError, match="valid: chunk_size, eps"):
        build_attention("linear", dim=16, num_heads=2, pattern="causal_self", window=3)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_attention("softmax", patterns=set(Pattern))(type("Again", (torch.nn.Module,), {}))


def test_missing_reason_for_unsupported_pattern_raises():
    with pytest.raises(ValueError, match="give a reason"):
        register_attention("reasonless", patterns={Pattern.CAUSAL_SELF})


def test_unsupported_pattern_error_names_reason_and_choices():
    @register_attention("only_self_for_test", patterns={Pattern.NONCAUSAL_SELF},
                        unsupported={Pattern.CAUSAL_SELF: "r1", Pattern.NONCAUSAL_CROSS: "r2", Pattern.CAUSAL_CROSS: "r3"})
    class OnlySelf(cab.MultiHeadAttention):
        """Test double."""

    try:
        with pytest.raises(UnsupportedPatternError, match=r"does not support causal_cross \(r3\); it supports: noncausal_self"):
            build_attention("only_self_for_test", dim=8, num_heads=2, pattern="causal_cross")
    finally:
        from cab import registry

        registry._ATTENTIONS.entries.pop("only_self_for_test")


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    """A third-party package registers through the `cab.attentions` entry-point group."""
    (tmp_path / "cab_plugin_demo.py").write_text(textwrap.dedent('''
        """A plugin attention (test double of a third-party package)."""
        from cab import MultiHeadAttention, Pattern, register_attention
        from attentions_softmax_core import core

        @register_attention("plugin_demo", patterns=set(Pattern))
        class PluginDemo(MultiHeadAttention):
            def attend(self, q, k, v, key_padding_mask):
                return core(q, k, v, key_padding_mask, self.causal)
            def core_flops(self, batch, len_q, len_k):
                return 4 * batch * len_q * len_k * self.dim
    '''))
    (tmp_path / "attentions_softmax_core.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from cab.attentions.softmax import sdpa_mask
        def core(q, k, v, mask, causal):
            m, c = sdpa_mask(mask, causal, q.shape[-2], k.shape[-2], q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=c)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))

    class EntryPoint:
        value = "cab_plugin_demo"

    import importlib.metadata as md

    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda group=None, **kw: [EntryPoint()] if group == "cab.attentions" else real(group=group, **kw))
    from cab import registry

    monkeypatch.setattr(registry._ATTENTIONS, "loaded", False)
    assert "plugin_demo" in list_attentions()
    layer = build_attention("plugin_demo", dim=16, num_heads=2, pattern="causal_cross")
    try:
        assert layer(torch.randn(1, 3, 16), context=torch.randn(1, 5, 16)).shape == (1, 3, 16)
    finally:
        registry._ATTENTIONS.entries.pop("plugin_demo")
        sys.modules.pop("cab_plugin_demo", None)


def test_default_hparams_come_from_the_signature():
    assert cab.attention_spec("linear").default_hparams() == {"eps": 1e-6, "chunk_size": 64}
