"""Views of the statistics and of single neurons, for the dashboard and notebooks.

Everything here is computed from a run's statistics and selection, or from the
model's weights and a short forward pass, and returns plain tensors, arrays or
records; drawing is the caller's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import hooks
from .corpus import Corpus, text_ids, token_piece
from .models import LoadedModel
from .selection import Selection
from .stats import Statistics


def overlap(selection: Selection) -> tuple[np.ndarray, np.ndarray]:
    """Shared neurons between languages: counts ``[K, K]`` (diagonal: own size) and
    Jaccard index ``[K, K]``."""
    sets = [
        {(layer, int(i)) for layer, idx in enumerate(per_layer) for i in idx}
        for per_layer in selection.masks
    ]
    k = len(sets)
    counts = np.zeros((k, k), dtype=np.int64)
    jaccard = np.zeros((k, k), dtype=np.float64)
    for a in range(k):
        for b in range(k):
            shared = len(sets[a] & sets[b])
            union = len(sets[a] | sets[b])
            counts[a, b] = shared
            jaccard[a, b] = shared / union if union else 0.0
    return counts, jaccard


def single_language_share(selection: Selection) -> float:
    """Share of selected neurons that belong to exactly one language."""
    owners: dict[tuple[int, int], int] = {}
    for per_layer in selection.masks:
        for layer, idx in enumerate(per_layer):
            for i in idx.tolist():
                owners[(layer, i)] = owners.get((layer, i), 0) + 1
    return sum(1 for v in owners.values() if v == 1) / len(owners) if owners else 0.0


def pool_columns(matrix: np.ndarray, max_columns: int) -> tuple[np.ndarray, int]:
    """Max-pool ``[rows, N]`` along N into at most ``max_columns`` columns.

    Returns the pooled matrix and the pool width (neurons per column), so that a
    7B model's 11008 neurons draw as about a thousand readable columns while no
    extreme value is averaged away.
    """
    rows, n = matrix.shape
    width = max(1, -(-n // max_columns))
    if width == 1:
        return matrix, 1
    padded = np.full((rows, -(-n // width) * width), np.nan, dtype=np.float64)
    padded[:, :n] = matrix
    with np.errstate(all="ignore"):
        pooled = np.nanmax(padded.reshape(rows, -1, width), axis=2)
    return pooled, width


def membership_mask(
    selection: Selection, language: int | None, shape: tuple[int, int]
) -> np.ndarray:
    """Boolean ``[L, N]``: selected for ``language`` (index), or for any language if None."""
    mask = np.zeros(shape, dtype=bool)
    languages = range(len(selection.masks)) if language is None else [language]
    for k in languages:
        for layer, idx in enumerate(selection.masks[k]):
            mask[layer, idx.numpy()] = True
    return mask


def most_specific_neuron(selection: Selection, shape: tuple[int, int]) -> tuple[int, int]:
    """The selected neuron the selection's score ranks most language-specific (for LAPE:
    lowest entropy); the first selected neuron when there is no score; the last layer's
    neuron 0 when nothing is selected.  A good first neuron to show."""
    mask = membership_mask(selection, None, shape)
    if not mask.any():
        return shape[0] - 1, 0
    specificity = selection.specificity()
    if specificity is None:
        layer, neuron = np.argwhere(mask)[0]
    else:
        ranked = np.where(mask, specificity.numpy(), -np.inf)
        layer, neuron = np.unravel_index(int(np.argmax(ranked)), mask.shape)
    return int(layer), int(neuron)


@dataclass
class MapPoints:
    """Neurons to place on a map: which ones (flat index ``layer * N + neuron``), their
    per-language activation probabilities, whether selected, their dominant language."""

    index: np.ndarray  # int [M]
    vectors: np.ndarray  # float [M, K]
    selected: np.ndarray  # bool [M]
    dominant: np.ndarray  # int [M], index into the languages
    labels: list[str]


def map_points(stats: Statistics, selection: Selection, limit: int, seed: int = 0) -> MapPoints:
    """Every selected neuron and a seeded random sample of the others, ``limit`` in all at
    most (a projection's cost grows with the points; the selected ones always show)."""
    num_neurons = stats.num_neurons
    probs = stats.probabilities().reshape(-1, len(stats.languages)).numpy()
    selected = membership_mask(selection, None, (stats.num_layers, num_neurons)).reshape(-1)
    index = np.arange(probs.shape[0])
    if len(index) > limit:
        chosen = np.flatnonzero(selected)
        room = max(limit - len(chosen), 0)
        rng = np.random.default_rng(seed)
        rest = rng.choice(
            np.flatnonzero(~selected), min(room, int((~selected).sum())), replace=False
        )
        index = np.sort(np.concatenate([chosen, rest]))
    vectors = probs[index]
    labels = [f"layer {i // num_neurons}, neuron {i % num_neurons}" for i in index.tolist()]
    return MapPoints(index, vectors, selected[index], vectors.argmax(axis=1), labels)


def neuron_profile(stats: Statistics, layer: int, neuron: int) -> dict[str, dict[str, float]]:
    """Per-language activation probability, mean and spread of one neuron."""
    probs = stats.probabilities()[layer, neuron]
    mean = stats.mean_activation()[layer, neuron]
    std = stats.std_activation()[layer, neuron]
    return {
        code: {"probability": float(probs[k]), "mean": float(mean[k]), "std": float(std[k])}
        for k, code in enumerate(stats.languages)
    }


def promoted_tokens(lm: LoadedModel, layer: int, neuron: int, k: int = 12) -> dict[str, list]:
    """Output tokens a neuron pushes up and down: its down-projection column through the
    unembedding (the direct effect, ignoring the final norm's scale)."""
    down = lm.down_projection(layer)
    weight = down.weight.detach()
    # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
    column = weight[neuron, :] if type(down).__name__ == "Conv1D" else weight[:, neuron]
    with torch.inference_mode():
        head = lm.model.get_output_embeddings().weight.detach()
        scores = head.float() @ column.to(head.device).float()
    top = torch.topk(scores, k)
    bottom = torch.topk(-scores, k)

    def tokens(ids: torch.Tensor, values: torch.Tensor) -> list[tuple[str, float]]:
        return [
            (token_piece(lm.tokenizer, int(i)), float(v))
            for i, v in zip(ids.tolist(), values.tolist(), strict=True)
        ]

    return {"up": tokens(top.indices, top.values), "down": tokens(bottom.indices, -bottom.values)}


@dataclass
class Passage:
    """A paragraph with one neuron's value at each of its tokens."""

    language: str
    tokens: list[str]
    values: list[float]

    @property
    def peak(self) -> float:
        return max(self.values) if self.values else 0.0


def layer_activations(
    lm: LoadedModel,
    corpus: Corpus,
    languages: Sequence[str],
    layer: int,
    paragraphs_per_language: int = 12,
) -> list[tuple[str, list[str], torch.Tensor]]:
    """Values of every neuron of ``layer`` on the first paragraphs of each language.

    Returns ``(language, tokens, values [tokens, N])`` per paragraph; capture this once
    per layer, then any neuron of the layer is a column away.
    """
    captured: list[torch.Tensor] = []

    def capture(values: torch.Tensor) -> None:
        captured.append(values.reshape(-1, values.shape[-1]).float().cpu())

    results = []
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    # A hooks client: only this thread's forward passes are captured.
    with hooks.bound(lm, {layer: capture}), torch.inference_mode():
        for code in languages:
            for paragraph in corpus.texts[code].paragraphs[:paragraphs_per_language]:
                ids = text_ids(lm.tokenizer, paragraph, 256).tolist()
                full = ([bos] if bos is not None else []) + ids
                captured.clear()
                lm.body(input_ids=torch.tensor([full], device=lm.input_device), use_cache=False)
                values = captured[0][1:] if bos is not None else captured[0]
                tokens = [lm.tokenizer.decode([i]) for i in ids]
                results.append((code, tokens, values))
    return results


def top_passages(
    activations: list[tuple[str, list[str], torch.Tensor]], neuron: int, k: int = 5
) -> list[Passage]:
    """The ``k`` paragraphs where ``neuron`` fires most (by peak value)."""
    passages = [
        Passage(code, tokens, values[:, neuron].tolist()) for code, tokens, values in activations
    ]
    return sorted(passages, key=lambda p: p.peak, reverse=True)[:k]


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """First two principal components of ``vectors`` ``[M, K]`` (centred SVD)."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
    return (
        centred @ vt[:2].T
        if vt.shape[0] >= 2
        else np.c_[centred @ vt[:1].T, np.zeros(len(vectors))]
    )


def umap_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP embedding of ``vectors``; needs the optional ``umap-learn`` package."""
    try:
        import umap
    except ImportError as exc:
        raise ImportError(
            "UMAP needs the optional package umap-learn: pip install 'langneurons[map]'."
        ) from exc
    reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=15, min_dist=0.1, n_jobs=1)
    return reducer.fit_transform(vectors)
