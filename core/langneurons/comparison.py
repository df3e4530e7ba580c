"""Detectors side by side on one run: where their neurons are, how much they agree, and
what their neurons *do*.

Firing for a language is not being needed for it, so a detector is judged here by its
neurons' effects as well as by their count: switching a language's neurons off should
hurt that language most (the ablation matrix's diagonal-over-off-diagonal ratio, and
each language's own NLL increase), and setting them to their mean should turn output
into that language (steering success at strength 1 on everyday English openings).

>>> from langneurons.selection import METHODS
>>> "lape" in METHODS
True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .evaluation import AblationMatrix
from .langid import supported_languages
from .models import LoadedModel
from .progress import ProgressCallback, emit
from .prompts import embedded_prompts
from .results import Run
from .selection import DETECTORS, METHODS, Selection, SelectionConfig, select
from .steering import SteeringConfig, SteeringSweep, steering_sweep
from .workflows import check_model_matches, run_ablation_matrix, run_samples

DEFAULT_PROMPTS = 8
"""Steering is measured on the first eight embedded English openings by default."""


def jaccard(a: set[Any], b: set[Any]) -> float:
    """``|a & b| / |a | b|`` (1 for two empty sets: they agree)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def _neuron_set(selection: Selection, language: str) -> set[tuple[int, int]]:
    k = selection.languages.index(language)
    return {(layer, int(i)) for layer, idx in enumerate(selection.masks[k]) for i in idx}


@dataclass
class DetectorComparison:
    """Several detectors' selections on the same statistics, with their effects when
    measured (``ablations`` and ``steering`` by method)."""

    languages: list[str]
    selections: dict[str, Selection]
    ablations: dict[str, AblationMatrix] = field(default_factory=dict)
    steering: dict[str, SteeringSweep] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.selections)

    def neurons(self) -> Any:
        """Neurons per method (rows) and language (columns), with the distinct total."""
        import pandas as pd

        rows = {
            method: {
                **{code: s.language_total(code) for code in self.languages},
                "distinct": s.union_size(),
            }
            for method, s in self.selections.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index")

    def per_layer(self) -> Any:
        """Long format: method, layer, language, neurons (for per-layer plots)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"method": method, "layer": layer, "language": code, "neurons": int(count)}
                for method, s in self.selections.items()
                for layer, row in enumerate(s.counts().tolist())
                for code, count in zip(s.languages, row, strict=True)
            ]
        )

    def overlap(self) -> Any:
        """Jaccard overlap of each pair of methods' neurons, per language."""
        import pandas as pd

        rows = []
        methods = self.methods
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                for code in self.languages:
                    rows.append(
                        {
                            "method_a": a,
                            "method_b": b,
                            "language": code,
                            "jaccard": jaccard(
                                _neuron_set(self.selections[a], code),
                                _neuron_set(self.selections[b], code),
                            ),
                        }
                    )
        return pd.DataFrame(rows, columns=["method_a", "method_b", "language", "jaccard"])

    def overlap_matrix(self, language: str) -> Any:
        """Jaccard overlap of every pair of methods' neurons for ``language``, a square
        DataFrame (methods x methods, 1 on the diagonal)."""
        import pandas as pd

        sets = {m: _neuron_set(s, language) for m, s in self.selections.items()}
        return pd.DataFrame(
            [[jaccard(sets[a], sets[b]) for b in self.methods] for a in self.methods],
            index=self.methods,
            columns=self.methods,
        )

    def effects(self) -> Any:
        """Per method and language: neurons, the language's own NLL increase with its
        neurons off, the method's diagonal ratio, and steering success at strength 1
        (NaN where not measured, or where a language has no neurons to steer)."""
        import pandas as pd

        rows = []
        for method, selection in self.selections.items():
            matrix = self.ablations.get(method)
            sweep = self.steering.get(method)
            ratio = matrix.diagonal_ratio() if matrix is not None else math.nan
            for code in self.languages:
                own = math.nan
                if matrix is not None and code in matrix.languages:
                    own = matrix.deactivated[code][code] - matrix.base[code]
                success = math.nan
                if sweep is not None:
                    with contextlib.suppress(KeyError):  # no neurons: not steered
                        success = sweep.cell(code, 1.0).success
                rows.append(
                    {
                        "method": method,
                        "language": code,
                        "neurons": selection.language_total(code),
                        "own_nll_increase": own,
                        "diagonal_ratio": ratio,
                        "steering_success": success,
                    }
                )
        return pd.DataFrame(rows)

    def to_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            return None if isinstance(value, float) and math.isnan(value) else value

        return {
            "methods": self.methods,
            "languages": self.languages,
            "neurons": {
                m: {c: s.language_total(c) for c in self.languages}
                for m, s in self.selections.items()
            },
            "distinct": {m: s.union_size() for m, s in self.selections.items()},
            "per_layer": {
                m: {c: s.counts()[:, k].tolist() for k, c in enumerate(s.languages)}
                for m, s in self.selections.items()
            },
            "overlap": self.overlap().to_dict(orient="records"),
            "effects": [
                {k: clean(v) for k, v in row.items()}
                for row in self.effects().to_dict(orient="records")
            ],
            "settings": {m: s.settings for m, s in self.selections.items()},
        }


def compare_detectors(
    lm: LoadedModel | None,
    run: Run,
    methods: Sequence[str] | None = None,
    *,
    effects: bool = True,
    max_tokens: int = 300,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = 30,
    configs: Mapping[str, SelectionConfig] | None = None,
    progress: ProgressCallback | None = None,
) -> DetectorComparison:
    """Select with each of ``methods`` (default: every detector, each with its default
    settings) on ``run``'s statistics and, with ``effects`` (needs ``lm``), measure each
    method's neurons: the ablation matrix on ``max_tokens`` held-out tokens per language
    and steering success at strength 1 on ``prompts`` (default: the first
    :data:`DEFAULT_PROMPTS` embedded English openings).  ``configs`` gives some methods
    other settings than their defaults (by method name).  Everything is cached.

    >>> import tempfile
    >>> from langneurons import compute
    >>> from langneurons.results import read_run
    >>> from langneurons.tiny import tiny_model
    >>> folder = tempfile.mkdtemp()
    >>> _ = compute(tiny_model(), ["en", "fr"], max_tokens=200, out_dir=folder)
    >>> found = compare_detectors(None, read_run(folder), ["lape", "mean-diff"], effects=False)
    >>> found.neurons().columns.tolist()
    ['en', 'fr', 'distinct']
    """
    from .errors import LangNeuronsError

    if run.statistics is None:
        raise LangNeuronsError(
            f"{str(run.path)!r} holds masks without statistics: detectors need the counts. "
            "Run `langneurons compute` first."
        )
    can_sample = lm is not None or run.samples is not None
    chosen = list(methods or [m for m in METHODS if can_sample or not DETECTORS[m].needs_samples])
    for method in chosen:
        if method not in METHODS:
            raise LangNeuronsError(
                f"Unknown selection method {method!r}; the methods are {', '.join(METHODS)}."
            )
    if effects and lm is None:
        raise LangNeuronsError("Measuring what the neurons do needs the model.")
    samples = None
    if any(DETECTORS[m].needs_samples for m in chosen):
        if lm is None and run.samples is None:
            raise LangNeuronsError(
                "The average-precision detector needs per-sample activations, which this run "
                "does not keep: load the model to collect them."
            )
        samples = run.samples if lm is None else run_samples(lm, run, progress)
    settings = dict(configs or {})
    selections = {
        method: select(run.statistics, settings.get(method, method), samples=samples)
        for method in chosen
    }
    comparison = DetectorComparison(list(run.languages), selections)
    if not effects or lm is None:
        return comparison
    check_model_matches(lm, run)
    openings = list(prompts) if prompts is not None else embedded_prompts("en")[:DEFAULT_PROMPTS]
    identifiable = set(supported_languages())
    for method, selection in selections.items():
        emit(progress, "evaluate", f"{method}: ablation matrix")
        comparison.ablations[method] = run_ablation_matrix(
            lm,
            run,
            max_tokens=max_tokens,
            masks=selection.masks,
            cache=True,
            progress=progress,
        )
        targets = [
            code
            for code in run.languages
            if code != "en" and code in identifiable and selection.language_total(code) > 0
        ]
        if targets:
            emit(progress, "steer", f"{method}: steering at strength 1")
            comparison.steering[method] = steering_sweep(
                lm,
                selection.masks,
                selection.languages,
                run.statistics,
                targets,
                prompts=openings,
                strengths=(0.0, 1.0),
                config=SteeringConfig(max_new_tokens=max_new_tokens),
                progress=progress,
                native_references=False,  # only success at strength 1 is compared
            )
    return comparison
