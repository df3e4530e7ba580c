"""Model families as data: where each family's MLP neuron activations live.

A *neuron* is one channel of a transformer MLP's intermediate activation.  For a
gated MLP (Llama, Gemma, ...) its value is ``act_fn(gate_proj(x))``, taken before
the product with ``up_proj(x)``; for a non-gated MLP (GPT-2, OPT, ...) it is the
output of the activation after the first projection.  In both cases the value is
the output of one activation *module* per layer, so an adapter only names:

- ``layers``: the dotted path from the causal-LM object to its list of decoder layers;
- ``activation``: the dotted path from one decoder layer to its activation module;
- ``down``: the dotted path from one decoder layer to the projection that maps the
  neurons back to the residual stream (to see which output tokens a neuron promotes).

Adding a family is one entry in :data:`FAMILIES` (docs/how-it-works.md, "Where things go").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import hooks
from .errors import UnsupportedModelError


@dataclass(frozen=True)
class FamilyAdapter:
    """Where one model family keeps its decoder layers and MLP activation modules."""

    name: str
    model_types: tuple[str, ...]
    layers: str
    activation: str
    gated: bool
    down: str = "mlp.down_proj"

    def describe(self) -> str:
        kind = "act_fn(gate_proj(x))" if self.gated else "activation after the first projection"
        return f"{self.name}: {self.layers}[i].{self.activation} ({kind})"


FAMILIES: tuple[FamilyAdapter, ...] = (
    FamilyAdapter("Llama", ("llama",), "model.layers", "mlp.act_fn", gated=True),
    FamilyAdapter("Mistral", ("mistral",), "model.layers", "mlp.act_fn", gated=True),
    FamilyAdapter("Qwen2", ("qwen2",), "model.layers", "mlp.act_fn", gated=True),
    FamilyAdapter("Qwen3", ("qwen3",), "model.layers", "mlp.act_fn", gated=True),
    FamilyAdapter("Gemma", ("gemma",), "model.layers", "mlp.act_fn", gated=True),
    FamilyAdapter("Gemma 2", ("gemma2",), "model.layers", "mlp.act_fn", gated=True),
    FamilyAdapter("Gemma 3", ("gemma3_text",), "model.layers", "mlp.act_fn", gated=True),
    FamilyAdapter(
        "Gemma 3 (multimodal checkpoint)",
        ("gemma3",),
        "model.language_model.layers",
        "mlp.act_fn",
        gated=True,
    ),
    FamilyAdapter("Phi-3", ("phi3",), "model.layers", "mlp.activation_fn", gated=True),
    FamilyAdapter("GPT-2", ("gpt2",), "transformer.h", "mlp.act", gated=False, down="mlp.c_proj"),
    FamilyAdapter(
        "BLOOM",
        ("bloom",),
        "transformer.h",
        "mlp.gelu_impl",
        gated=False,
        down="mlp.dense_4h_to_h",
    ),
    FamilyAdapter(
        "OPT", ("opt",), "model.decoder.layers", "activation_fn", gated=False, down="fc2"
    ),
    FamilyAdapter(
        "GPT-NeoX",
        ("gpt_neox",),
        "gpt_neox.layers",
        "mlp.act",
        gated=False,
        down="mlp.dense_4h_to_h",
    ),
)

_BY_TYPE: dict[str, FamilyAdapter] = {t: f for f in FAMILIES for t in f.model_types}


def supported_model_types() -> list[str]:
    """Every ``config.model_type`` that has an adapter."""
    return sorted(_BY_TYPE)


def _unsupported_message(model_type: str, reason: str = "") -> str:
    families = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
    why = f" {reason}" if reason else ""
    return (
        f"Model type {model_type!r} is not supported.{why} Supported families: {families}. "
        "To add one, append a FamilyAdapter to FAMILIES in core/langneurons/families.py "
        "naming the path to the decoder layers (e.g. 'model.layers') and, inside a layer, "
        "the MLP activation module whose output is the neuron value (e.g. 'mlp.act_fn')."
    )


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter of a ``config.model_type``; raises :class:`UnsupportedModelError`."""
    try:
        return _BY_TYPE[model_type]
    except KeyError:
        raise UnsupportedModelError(_unsupported_message(model_type)) from None


def get_path(root: object, path: str) -> object:
    """The attribute at a dotted ``path`` below ``root`` (``"model.layers"``)."""
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_activation_modules(model: nn.Module) -> tuple[FamilyAdapter, list[nn.Module]]:
    """The family adapter of ``model`` and its activation module of every decoder layer.

    Raises :class:`UnsupportedModelError` when the family is unknown or when the
    adapter's paths do not resolve to one distinct module per layer (a changed
    ``transformers`` version, say), since hooking the wrong place would give silently
    wrong statistics.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    adapter = adapter_for(model_type)
    try:
        layers = get_path(model, adapter.layers)
    except AttributeError:
        raise UnsupportedModelError(
            _unsupported_message(
                model_type,
                f"Its adapter expects decoder layers at {adapter.layers!r}, which "
                f"{type(model).__name__} does not have.",
            )
        ) from None
    if not isinstance(layers, (nn.ModuleList, list, tuple)) or len(layers) == 0:
        raise UnsupportedModelError(
            _unsupported_message(model_type, f"{adapter.layers!r} is not a list of layers.")
        )
    modules: list[nn.Module] = []
    for index, layer in enumerate(layers):
        try:
            module = get_path(layer, adapter.activation)
        except AttributeError:
            module = None
        if not isinstance(module, nn.Module):
            raise UnsupportedModelError(
                _unsupported_message(
                    model_type,
                    f"Layer {index} has no activation module at {adapter.activation!r}.",
                )
            )
        modules.append(module)
    if len({id(m) for m in modules}) != len(modules):
        raise UnsupportedModelError(
            _unsupported_message(
                model_type,
                "Its layers share one activation module, so a hook cannot tell layers apart.",
            )
        )
    return adapter, modules


def neuron_width(model: nn.Module, modules: list[nn.Module]) -> int:
    """The number of neurons per layer, read from a two-token forward pass.

    Reading it from the activation itself works for every family and config naming
    (``intermediate_size``, ``n_inner``, ``ffn_dim``, ...).  All layers must agree.
    """
    widths: dict[int, int] = {}

    def reader(layer: int) -> Callable[[torch.Tensor], None]:
        return lambda out: widths.__setitem__(layer, int(out.shape[-1]))

    device = next(model.parameters()).device
    readers = {i: reader(i) for i in range(len(modules))}
    with hooks.bound_modules(model, modules, readers), torch.inference_mode():
        body_of(model)(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device))
    if len(set(widths.values())) != 1 or len(widths) != len(modules):
        raise UnsupportedModelError(
            "Layers have different MLP widths or some layers did not run: "
            f"{sorted(widths.items())}. LangNeurons needs one width for every layer."
        )
    return next(iter(widths.values()))


def body_of(model: nn.Module) -> nn.Module:
    """The transformer body without the vocabulary head (``model.base_model``)."""
    body = getattr(model, "base_model", None)
    return body if isinstance(body, nn.Module) else model
