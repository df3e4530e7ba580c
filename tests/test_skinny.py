"""The few-row product path for the CPU: same results as ``nn.Linear``, taken only where it
was measured to help, and put in place on every loaded model's body."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from langneurons.skinny import SKINNY_ROWS, SkinnyLinear, head_logits, use_skinny_linears


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    "shape", [(1, 16), (2, 16), (3, 16), (4, 16), (2, 1, 16), (1, 4, 16), (9, 16)]
)
def test_skinny_linear_equals_linear(bias, shape):
    torch.manual_seed(0)
    plain = nn.Linear(16, 24, bias=bias)
    skinny = copy.deepcopy(plain)
    assert use_skinny_linears(skinny) == 1 and type(skinny) is SkinnyLinear
    x = torch.randn(*shape)
    out = skinny(x)
    assert out.shape == plain(x).shape
    torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-6)


def test_only_two_to_four_float32_cpu_rows_take_the_other_path(monkeypatch):
    layer = nn.Linear(8, 8, bias=False)
    use_skinny_linears(layer)
    calls = []
    original = nn.Linear.forward

    def counting(self, input):
        calls.append(input.numel() // 8)
        return original(self, input)

    monkeypatch.setattr(nn.Linear, "forward", counting)
    for rows in range(1, 8):
        layer(torch.randn(rows, 8))
    layer.to(torch.bfloat16)(torch.randn(3, 8, dtype=torch.bfloat16))
    fell_back = [r for r in range(1, 8) if r not in SKINNY_ROWS] + [3]
    assert calls == fell_back  # 2-4 float32 rows never reached nn.Linear.forward


def test_loaded_models_use_it_in_the_body_only_and_keep_their_weights(tiny_model):
    body_linears = [m for m in tiny_model.body.modules() if isinstance(m, nn.Linear)]
    assert body_linears and all(type(m) is SkinnyLinear for m in body_linears)
    head = tiny_model.model.get_output_embeddings()
    assert type(head) is nn.Linear

    # Subclasses (quantised layers, for example) keep their own forward.
    class Special(nn.Linear):
        pass

    holder = nn.Sequential(Special(4, 4), nn.Linear(4, 4))
    assert use_skinny_linears(holder) == 1 and type(holder[0]) is Special
    assert use_skinny_linears(holder) == 0 and type(holder[1]) is SkinnyLinear  # again: no-op


def test_head_logits_pads_one_row_and_agrees(tiny_model):
    head = tiny_model.model.get_output_embeddings()
    for rows in (1, 2, 5):
        hidden = torch.randn(rows, head.in_features)
        torch.testing.assert_close(head_logits(head, hidden), head(hidden), rtol=1e-4, atol=1e-5)
