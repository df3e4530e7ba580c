"""The three-way split's score, selection and weight search written plainly, neuron by
neuron and step by step as the authors' scripts describe them (AAAI 2026,
Language-Neurons-Alignment), to check the vectorised detector against."""

from __future__ import annotations

import math

import torch


def neuron_entropy(p: torch.Tensor) -> float:
    """One neuron's normalised-probability entropy (probabilities floored at 1e-12)."""
    total = float(p.sum())
    q = p / total if total > 0 else torch.full_like(p, 1.0 / p.numel())
    q = q.clamp_min(1e-12)
    q = q / q.sum()
    return float(-(q * (q + 1e-30).log()).sum())


def scores(probs: torch.Tensor, weight: float) -> torch.Tensor:
    layers, neurons, k = probs.shape
    norm_max = sum(1 / i for i in range(1, k + 1)) / k
    out = torch.zeros(layers, neurons)
    for layer in range(layers):
        for n in range(neurons):
            entropy = neuron_entropy(probs[layer, n]) / math.log(k)
            out[layer, n] = entropy - float(probs[layer, n].max()) * weight / norm_max
    return out


def masks(probs: torch.Tensor, weight: float, top_rate: float, bar_ratio: float):
    layers, neurons, k = probs.shape
    score = scores(probs, weight)
    top = round(score.numel() * top_rate)
    flat = score.flatten()
    order = sorted(range(flat.numel()), key=lambda i: (float(flat[i]), i))[:top]
    bar = float(probs.flatten().kthvalue(round(probs.numel() * bar_ratio)).values)
    found = [[[] for _ in range(layers)] for _ in range(k)]
    for index in order:
        layer, n = divmod(index, neurons)
        for lang in range(k):
            if probs[layer, n, lang] > bar:
                found[lang][layer].append(n)
    return [[sorted(set(m)) for m in per_lang] for per_lang in found]


def appear(found) -> list[int]:
    k = len(found)
    counts = [0] * (k + 1)
    for layer in range(len(found[0])):
        seen: dict[int, int] = {}
        for lang in range(k):
            for n in found[lang][layer]:
                seen[n] = seen.get(n, 0) + 1
        for c in seen.values():
            counts[c] += 1
    return counts


def search(probs, top_rate, bar_ratio, low=0.0, high=0.2, eps=1e-3):
    k = probs.shape[-1]

    def ok(weight):
        return appear(masks(probs, weight, top_rate, bar_ratio))[k] == 0

    best = None
    if ok(low):
        best = low
    if ok(high):
        best = high
    while high - low > eps:
        middle = (low + high) / 2
        if ok(middle):
            best = low = middle
        else:
            high = middle
    return best
