"""Every supported family, as a tiny random-weight model: hooks resolve, counts are exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from langneurons.errors import UnsupportedModelError
from langneurons.families import FAMILIES, adapter_for, resolve_activation_modules
from langneurons.models import LoadedModel
from langneurons.stats import NeuronCounter, collect_language_stats

from .conftest import FAMILY_TYPES


def test_every_listed_family_has_a_test_model():
    covered = {t for f in FAMILIES for t in f.model_types}
    assert covered == set(FAMILY_TYPES)


def _naive_counts(lm: LoadedModel, windows: list[torch.Tensor]) -> torch.Tensor:
    """Copy every activation out of a full forward pass and count on the CPU."""
    captured: dict[int, list[torch.Tensor]] = {i: [] for i in range(lm.num_layers)}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, i=i: captured[i].append(out.detach().clone())
        )
        for i, module in enumerate(lm.modules)
    ]
    try:
        with torch.no_grad():
            for window in windows:
                lm.model(input_ids=window[None])
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(
        [
            # OPT flattens positions inside its MLP; skip the BOS position of each window.
            sum(
                (t.reshape(len(w), -1)[1:] > 0).sum(dim=0)
                for t, w in zip(captured[i], windows, strict=True)
            )
            for i in range(lm.num_layers)
        ]
    )


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_family_counts_equal_a_naive_capture(make_tiny_model, tiny_tokenizer, model_type):
    from langneurons.corpus import load_corpus, tokenize_windows

    lm = make_tiny_model(model_type)
    assert lm.adapter is adapter_for(model_type)
    assert lm.num_layers == 2
    # The neuron width is read from the activation: 48 in our configs, 4*hidden for BLOOM.
    assert lm.num_neurons == (128 if model_type == "bloom" else 48)
    text = load_corpus("udhr", ["fr"]).identify_text("fr")
    windows = tokenize_windows(tiny_tokenizer, text, max_tokens=300, seq_len=64)
    stats = collect_language_stats(lm, windows, batch_size=1)
    assert stats.tokens == sum(len(w) - 1 for w in windows) == 300
    expected = _naive_counts(lm, windows)
    assert torch.equal(stats.over_zero, expected)
    assert 0 < int(stats.over_zero.sum()) < stats.tokens * lm.num_layers * lm.num_neurons
    # Hooks are gone afterwards.
    assert all(not m._forward_hooks for m in lm.modules)


def test_statistics_never_run_the_vocabulary_head(make_tiny_model, tiny_tokenizer):
    from langneurons.corpus import load_corpus, tokenize_windows

    lm = make_tiny_model("gemma3_text")
    calls = []
    handle = lm.model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        text = load_corpus("udhr", ["en"]).identify_text("en")
        windows = tokenize_windows(tiny_tokenizer, text, max_tokens=100, seq_len=64)
        stats = collect_language_stats(lm, windows)
        lm.model(input_ids=windows[0][None])  # the hook itself works
    finally:
        handle.remove()
    assert stats.tokens == 100
    assert calls == [1]


def test_batched_counts_match_unbatched(make_tiny_model, tiny_tokenizer):
    from langneurons.corpus import load_corpus, tokenize_windows

    lm = make_tiny_model("gemma3_text")
    text = load_corpus("udhr", ["de"]).identify_text("de")
    windows = tokenize_windows(tiny_tokenizer, text, max_tokens=500, seq_len=40)
    one = collect_language_stats(lm, windows, batch_size=1)
    many = collect_language_stats(lm, windows, batch_size=5)
    assert one.tokens == many.tokens
    # Batching changes float summation order only: counts agree to a handful of values
    # that sit within rounding of zero, sums to float precision.
    assert (one.over_zero - many.over_zero).abs().sum() <= 2
    assert torch.allclose(one.activation_sum, many.activation_sum, rtol=1e-4, atol=1e-3)


def test_counter_removes_hooks_after_an_exception(tiny_model):
    with pytest.raises(RuntimeError, match="boom"), NeuronCounter(tiny_model, False):
        assert all(len(m._forward_hooks) == 1 for m in tiny_model.modules)
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in tiny_model.modules)


def test_unsupported_family_lists_the_supported_ones_and_how_to_add_one():
    with pytest.raises(UnsupportedModelError) as info:
        adapter_for("mamba")
    message = str(info.value)
    assert "'mamba' is not supported" in message
    for name in ("Llama", "Gemma 3", "GPT-2", "GPT-NeoX", "OPT", "BLOOM", "Phi-3"):
        assert name in message
    assert "FamilyAdapter" in message and "families.py" in message


def test_a_model_whose_layout_drifted_is_refused(make_tiny_model):
    lm = make_tiny_model("llama")
    for layer in lm.model.model.layers:
        layer.mlp.act_fn = None  # as if a new transformers version renamed the module
    with pytest.raises(UnsupportedModelError, match=r"no activation module at 'mlp\.act_fn'"):
        resolve_activation_modules(lm.model)


def test_a_shared_activation_module_is_refused(make_tiny_model):
    lm = make_tiny_model("llama")
    shared = nn.SiLU()
    for layer in lm.model.model.layers:
        layer.mlp.act_fn = shared
    with pytest.raises(UnsupportedModelError, match="share one activation module"):
        resolve_activation_modules(lm.model)


def test_fingerprint_changes_with_the_weights(make_tiny_model):
    a = make_tiny_model("qwen2", seed=0)
    b = make_tiny_model("qwen2", seed=0)
    c = make_tiny_model("qwen2", seed=1)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
