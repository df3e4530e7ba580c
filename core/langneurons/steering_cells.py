"""The results of a steering sweep: its cells, their scores, and the rule that recommends
a strength per target.

Fluency is judged against a reference.  The unmodified model's own outputs on the same
prompts (strength 0, usually English) are one; but a 270M model writes Hindi or Japanese
less predictably and with more repetition than English whatever is done to it, so
steered Hindi judged against English looks disfluent when it is as fluent as the model's
Hindi ever is.  Where the target language has embedded openings
(``assets/prompts/<code>.txt``), the sweep also lets the unmodified model continue those,
in the target language itself: the **native reference**.  A steered cell keeps fluency
when its NLL is within :data:`FLUENCY_NLL_RISE` of the looser of the two references and
its distinct-bigram share at least :data:`DISTINCT_KEEP` of the looser one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .langid import detect_language, line_verdict

FLUENCY_NLL_RISE = 1.0
"""A strength keeps fluency while its outputs' NLL stays within this many nats per token
of the reference's ..."""
DISTINCT_KEEP = 0.75
"""... and their distinct-bigram share at this fraction of the reference's or more."""
MIN_GAIN = 0.05
"""A strength is recommended only if its success is this much above the baseline's."""
NATIVE = "native"
"""The ``layers`` label of a native reference cell (the model's own text in the target)."""


def distinct_bigrams(sequences: Sequence[Sequence[int]]) -> float:
    """Distinct token bigrams over all bigrams of ``sequences`` (0 when there are none)."""
    pairs = [tuple(s[i : i + 2]) for s in sequences for i in range(len(s) - 1)]
    return len(set(pairs)) / len(pairs) if pairs else 0.0


@dataclass
class SteeringCell:
    """One (target, strength, layers) of a sweep: the outputs and their scores."""

    target: str
    strength: float
    layers: str
    success: float
    line_pass_rate: float
    nll: float
    distinct2: float
    n: int
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "outputs"}


@dataclass(frozen=True)
class FluencyBar:
    """What a steered cell of one target must reach to count as fluent, and why."""

    max_nll: float
    min_distinct2: float
    reference: str
    """``"unmodified"`` (the prompts' own continuations) or ``"native"``."""


@dataclass
class SteeringSweep:
    """The cells of a sweep and what produced them (JSON: ``{"rows", "settings",
    "recommended", "references"}``).  ``native`` maps a target to its native reference
    cell, where the target has embedded openings."""

    cells: list[SteeringCell]
    settings: dict[str, Any]
    native: dict[str, SteeringCell] = field(default_factory=dict)

    def to_frame(self) -> Any:
        """One row per cell: target, strength, layers, success, line_pass_rate, nll,
        distinct2, n (a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([c.row() for c in self.cells])

    def references_frame(self) -> Any:
        """One row per target: the unmodified outputs' and the native reference's NLL and
        distinct bigrams, and the bar a steered cell had to reach (a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([self._reference_row(t) for t in self.targets])

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(c.target for c in self.cells))

    def _reference_row(self, target: str) -> dict[str, Any]:
        base = self._base(target)
        native = self.native.get(target)
        bar = self.fluency_bar(target)
        return {
            "target": target,
            "unmodified_nll": base.nll if base else None,
            "unmodified_distinct2": base.distinct2 if base else None,
            "native_nll": native.nll if native else None,
            "native_distinct2": native.distinct2 if native else None,
            "native_success": native.success if native else None,
            "max_nll": bar.max_nll if bar else None,
            "min_distinct2": bar.min_distinct2 if bar else None,
        }

    def to_json(self, outputs: bool = False) -> dict[str, Any]:
        document: dict[str, Any] = {
            "rows": [c.row() for c in self.cells],
            "settings": self.settings,
            "recommended": self.recommended(),
            "references": {t: self._reference_row(t) for t in self.targets},
        }
        if outputs:
            document["outputs"] = [
                {
                    "target": c.target,
                    "strength": c.strength,
                    "layers": c.layers,
                    "outputs": c.outputs,
                }
                for c in [*self.cells, *self.native.values()]
            ]
        return document

    def cell(self, target: str, strength: float, layers: str = "all") -> SteeringCell:
        if layers == NATIVE and target in self.native:
            return self.native[target]
        for c in self.cells:
            if (c.target, c.strength, c.layers) == (target, strength, layers):
                return c
        raise KeyError((target, strength, layers))

    def _base(self, target: str) -> SteeringCell | None:
        return next((c for c in self.cells if c.target == target and c.strength == 0), None)

    def fluency_bar(self, target: str) -> FluencyBar | None:
        """The NLL a steered cell of ``target`` may reach and the distinct bigrams it must
        keep: relative to the looser of the unmodified outputs and the native reference."""
        base = self._base(target)
        if base is None:
            return None
        native = self.native.get(target)
        reference, nll, distinct = "unmodified", base.nll, base.distinct2
        if native is not None and native.nll == native.nll and native.nll > nll:
            reference, nll = NATIVE, native.nll
        if native is not None and native.distinct2 < distinct:
            distinct = native.distinct2
            reference = NATIVE
        return FluencyBar(nll + FLUENCY_NLL_RISE, DISTINCT_KEEP * distinct, reference)

    def recommended(self) -> dict[str, dict[str, Any] | None]:
        """Per target: the strength (and layers) with the highest success among those that
        keep fluency (:meth:`fluency_bar`), the lowest strength on a tie; ``None`` when no
        strength beats the baseline by :data:`MIN_GAIN`."""
        chosen: dict[str, dict[str, Any] | None] = {}
        for target in self.targets:
            base, bar = self._base(target), self.fluency_bar(target)
            best: SteeringCell | None = None
            for c in sorted(
                (c for c in self.cells if c.target == target), key=lambda c: c.strength
            ):
                if c.strength == 0 or base is None or bar is None:
                    continue
                if c.nll > bar.max_nll or c.distinct2 < bar.min_distinct2:
                    continue
                if c.success >= base.success + MIN_GAIN and (
                    best is None or c.success > best.success
                ):
                    best = c
            chosen[target] = (
                None
                if best is None
                else {"strength": best.strength, "layers": best.layers, "success": best.success}
            )
        return chosen


def _rate(verdicts: Sequence[bool | None]) -> float:
    """The benchmark's line pass rate over responses: those with no line to judge are
    left out; 1.0 when none is judged."""
    judged = [v for v in verdicts if v is not None]
    return sum(judged) / len(judged) if judged else 1.0


def score_cell(target: str, strength: float, layers: str, document: dict[str, Any]) -> SteeringCell:
    """Score a cell's outputs (``document`` as cached: ``outputs`` with text and tokens,
    and their ``nll``) for ``target``."""
    outputs = []
    for item in document["outputs"]:
        code, probability = detect_language(item["text"])
        outputs.append(
            {
                "prompt": item["prompt"],
                "text": item["text"],
                "language": code,
                "probability": round(probability, 3),
                "lines_pass": line_verdict(item["text"], target),
            }
        )
    n = len(outputs)
    return SteeringCell(
        target=target,
        strength=strength,
        layers=layers,
        success=sum(o["language"] == target for o in outputs) / n if n else 0.0,
        line_pass_rate=_rate([o["lines_pass"] for o in outputs]),
        nll=float(document["nll"]),
        distinct2=distinct_bigrams([item["tokens"] for item in document["outputs"]]),
        n=n,
        outputs=outputs,
    )
