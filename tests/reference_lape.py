"""An independent, literal port of the reference LAPE selection (for comparison only).

It follows the reference code's steps and torch calls one by one (``kthvalue``,
``topk``, a Python loop over languages) so that the library's vectorised version
can be checked against it on counts.
"""

from __future__ import annotations

import torch


def reference_masks(
    over_zero: torch.Tensor,
    n: torch.Tensor,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> list[list[torch.Tensor]]:
    num_layers, _intermediate_size, lang_num = over_zero.size()
    activation_probs = over_zero / n
    normed = activation_probs / activation_probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_probs = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_probs, dim=-1)
    flattened_probs = activation_probs.flatten()
    top_prob_value = flattened_probs.kthvalue(round(len(flattened_probs) * filter_rate)).values
    top_position = (activation_probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf
    flattened_entropy = entropy.flatten()
    top_count = round(len(flattened_entropy) * top_rate)
    _, index = flattened_entropy.topk(top_count, largest=False)
    row_index = index // entropy.size(1)
    col_index = index % entropy.size(1)
    selected_probs = activation_probs[row_index, col_index].transpose(0, 1)
    bar = flattened_probs.kthvalue(round(len(flattened_probs) * activation_bar_ratio)).values
    lang, indice = torch.where(selected_probs > bar)
    merged = torch.stack((row_index, col_index), dim=-1)
    final = []
    for k in range(lang_num):  # the reference splits by bincount; same for present languages
        pairs = sorted(tuple(row.tolist()) for row in merged[indice[lang == k]])
        per_layer: list[list[int]] = [[] for _ in range(num_layers)]
        for layer, neuron in pairs:
            per_layer[layer].append(neuron)
        final.append([torch.tensor(h, dtype=torch.long) for h in per_layer])
    return final
