"""Corpora: per-language texts, their deterministic split, and their tokens.

A corpus maps language codes to paragraphs (one per line).  Two sources exist:

- ``"udhr"``: the embedded Universal Declaration of Human Rights (a parallel text,
  so languages differ in language, not topic);
- a folder of ``<code>.txt`` UTF-8 files, one paragraph per line.

Each language's paragraphs are split deterministically into an *identification*
part (counted for neuron statistics) and a held-out *evaluation* part (for
perplexity), see :func:`split_indices`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .errors import CorpusError, did_you_mean
from .paths import assets_dir

EMBEDDED = "udhr"
DEFAULT_EVAL_FRACTION = 0.2
MIN_IDENTIFY_TOKENS = 32
# Long texts are tokenized in pieces of about this many characters, cut at line ends, so
# a corpus of any size is never tokenized (or held as Python ints) in one piece.
TOKENIZE_PIECE_CHARS = 1_000_000
_CODE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class LanguageText:
    """The paragraphs of one language and where they came from."""

    code: str
    paragraphs: tuple[str, ...]
    source: str

    @property
    def sha256(self) -> str:
        return _sha("\n".join(self.paragraphs))


@dataclass(frozen=True)
class Split:
    """The identification and evaluation parts of one language (paragraph indices)."""

    identify: tuple[int, ...]
    evaluate: tuple[int, ...]


@dataclass(frozen=True)
class Corpus:
    """Texts for a set of languages, in the order the user asked for them."""

    name: str
    texts: dict[str, LanguageText]

    @property
    def languages(self) -> list[str]:
        return list(self.texts)

    def split(self, code: str, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> Split:
        return split_indices(len(self.texts[code].paragraphs), eval_fraction)

    def identify_text(self, code: str, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> str:
        """The identification part of ``code`` as one string, paragraphs joined by newlines."""
        paragraphs = self.texts[code].paragraphs
        return "\n".join(paragraphs[i] for i in self.split(code, eval_fraction).identify)

    def evaluate_text(self, code: str, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> str:
        """The held-out evaluation part of ``code``."""
        paragraphs = self.texts[code].paragraphs
        return "\n".join(paragraphs[i] for i in self.split(code, eval_fraction).evaluate)

    def describe(self, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> dict[str, Any]:
        """A JSON-ready record of the texts and their split, for ``meta.json``."""
        languages = {}
        for code, text in self.texts.items():
            split = self.split(code, eval_fraction)
            languages[code] = {
                "source": text.source,
                "paragraphs": len(text.paragraphs),
                "sha256": text.sha256,
                "identify_paragraphs": len(split.identify),
                "evaluate_paragraphs": list(split.evaluate),
                "identify_sha256": _sha(self.identify_text(code, eval_fraction)),
                "evaluate_sha256": _sha(self.evaluate_text(code, eval_fraction)),
            }
        return {
            "name": self.name,
            "split": {
                "eval_fraction": eval_fraction,
                "rule": "paragraph i (0-based) is held out for evaluation when "
                "floor((i + 1) * eval_fraction) > floor(i * eval_fraction)",
            },
            "languages": languages,
        }


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_indices(count: int, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> Split:
    """Deterministic split of ``count`` paragraphs, spread evenly through the text.

    Paragraph ``i`` is held out when ``floor((i+1)*f) > floor(i*f)``: exactly
    ``floor(count*f)`` paragraphs, evenly spaced (with ``f = 0.2``, every fifth), so
    both parts cover the whole document and a parallel text splits alike in every
    language.  With ``f = 0`` nothing is held out.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise CorpusError(f"eval_fraction must be in [0, 1), got {eval_fraction}.")
    evaluate = tuple(
        i for i in range(count) if int((i + 1) * eval_fraction) > int(i * eval_fraction)
    )
    held = set(evaluate)
    identify = tuple(i for i in range(count) if i not in held)
    return Split(identify=identify, evaluate=evaluate)


@cache
def _udhr_sources() -> dict[str, Any]:
    path = assets_dir() / "udhr" / "SOURCES.json"
    return json.loads(path.read_text(encoding="utf-8"))


def embedded_languages() -> dict[str, str]:
    """Codes of the embedded UDHR corpus and their English names."""
    return {code: info["name"] for code, info in _udhr_sources()["languages"].items()}


def language_name(code: str) -> str:
    """English name of a code of the embedded corpus, else the code itself."""
    return embedded_languages().get(code, code)


def read_text_file(path: Path) -> list[str]:
    """Paragraphs (non-empty lines, stripped) of a UTF-8 file; clear errors otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"Cannot read {path}: {exc.strerror}.") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CorpusError(
            f"{path} is not valid UTF-8 (byte {exc.start}, line {line}: "
            f"{raw[exc.start : exc.start + 4]!r}). Re-save it as UTF-8, for example with "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed.txt`."
        ) from None
    return paragraphs_of(text)


def paragraphs_of(text: str) -> list[str]:
    """The non-empty lines of ``text``, stripped: its paragraphs, as every corpus reads them."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_languages(languages: Sequence[str] | str) -> list[str]:
    """Codes from ``"en,fr"`` or a sequence, validated: non-empty, unique, code-shaped."""
    codes = (
        [c.strip() for c in languages.split(",")]
        if isinstance(languages, str)
        else [c.strip() for c in languages]
    )
    codes = [c for c in codes if c]
    if not codes:
        raise CorpusError("No languages given. Pass codes such as --languages en,fr,de.")
    seen: set[str] = set()
    for code in codes:
        if code in seen:
            raise CorpusError(f"Language {code!r} is listed twice; list each language once.")
        seen.add(code)
        if not _CODE.match(code):
            raise CorpusError(
                f"{code!r} is not a language code. Use ISO 639 codes such as 'en', 'fr', 'zh'."
            )
    return codes


def available_languages(source: str = EMBEDDED) -> list[str]:
    """Codes a corpus source offers: the embedded ones, or the ``*.txt`` stems of a folder."""
    if source == EMBEDDED:
        return sorted(embedded_languages())
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise CorpusError(
            f"Corpus {source!r} is neither 'udhr' (the embedded corpus) nor an existing folder "
            "of <code>.txt files."
        )
    return sorted(p.stem for p in folder.glob("*.txt"))


def load_corpus(source: str = EMBEDDED, languages: Sequence[str] | str = ("en", "fr")) -> Corpus:
    """Read the texts of ``languages`` from ``source`` (``"udhr"`` or a folder).

    Raises :class:`CorpusError` for unknown codes (listing what is there), missing,
    empty or non-UTF-8 files, and texts too short to split.
    """
    codes = parse_languages(languages)
    available = available_languages(source)
    if source == EMBEDDED:
        folder = assets_dir() / "udhr"
        label = "the embedded UDHR corpus"
    else:
        folder = Path(source).expanduser()
        label = f"corpus folder {str(folder)!r}"
    if not available:
        raise CorpusError(f"{label} has no <code>.txt files.")
    texts: dict[str, LanguageText] = {}
    for code in codes:
        if code not in available:
            raise CorpusError(
                f"Language {code!r} is not in {label}.{did_you_mean(code, available)} "
                f"Available: {', '.join(available)}."
            )
        path = folder / f"{code}.txt"
        paragraphs = read_text_file(path)
        if len(paragraphs) < 2:
            raise CorpusError(
                f"{path} has {len(paragraphs)} non-empty line(s); LangNeurons needs at least two "
                "paragraphs (one per line) to hold some out for evaluation."
            )
        src = f"udhr:{code}" if source == EMBEDDED else str(path.resolve())
        texts[code] = LanguageText(code=code, paragraphs=tuple(paragraphs), source=src)
    name = EMBEDDED if source == EMBEDDED else str(folder.resolve())
    return Corpus(name=name, texts=texts)


def tokenize_windows(
    tokenizer: Any,
    text: str,
    *,
    max_tokens: int | None,
    seq_len: int,
    language: str = "",
) -> list[torch.Tensor]:
    """Token windows of ``text`` for counting: each ``[BOS] + up to seq_len-1 tokens``.

    The text's tokens (no special tokens) are cut to ``max_tokens`` and chunked in
    order, like the reference code's fixed-length chunks of concatenated text.  A BOS
    token, when the tokenizer has one, starts every window so that each chunk looks
    like the start of a document to the model; its position is not counted.
    """
    if seq_len < 2:
        raise CorpusError(f"seq_len must be at least 2, got {seq_len}.")
    if max_tokens is not None and max_tokens < 1:
        raise CorpusError(f"max_tokens must be positive, got {max_tokens}.")
    ids = text_ids(tokenizer, text, max_tokens)
    if len(ids) < MIN_IDENTIFY_TOKENS:
        raise CorpusError(
            f"Language {language!r} has only {len(ids)} tokens to count (after the split and "
            f"the token budget); at least {MIN_IDENTIFY_TOKENS} are needed. Add text or raise "
            "--max-tokens."
        )
    return bos_windows(ids, getattr(tokenizer, "bos_token_id", None), seq_len)


def text_pieces(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` joined by newlines, cut into pieces of at least ``TOKENIZE_PIECE_CHARS``
    characters at line ends; the pieces concatenated are exactly the joined text.

    Tokenizing piece by piece is this project's definition of a text's tokens: a text
    shorter than one piece (every UDHR text) is tokenized whole, and a streamed corpus
    cut at the same places gives the same ids as the same text read from a file.
    """
    piece: list[str] = []
    chars = 0
    for line in lines:
        if chars >= TOKENIZE_PIECE_CHARS:
            yield "\n".join(piece) + "\n"
            piece, chars = [], 0
        piece.append(line)
        chars += len(line) + 1
    if piece:
        yield "\n".join(piece)


def piece_ids(tokenizer: Any, piece: str) -> torch.Tensor:
    """Token ids of one piece of text without special tokens, int64 ``[n]``."""
    ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int64)


def text_ids(tokenizer: Any, text: str, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids of ``text`` without special tokens, cut to ``max_tokens``, int64 ``[n]``.

    Long texts are tokenized in pieces (:func:`text_pieces`) and only as far as the
    budget needs.
    """
    parts: list[torch.Tensor] = []
    have = 0
    for piece in text_pieces(text.split("\n")):
        parts.append(piece_ids(tokenizer, piece))
        have += len(parts[-1])
        if max_tokens is not None and have >= max_tokens:
            break
    ids = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
    return ids if max_tokens is None else ids[:max_tokens]


def token_piece(tokenizer: Any, token_id: int) -> str:
    """One token as text; a byte-level piece that is not valid UTF-8 alone shows as the raw
    token (so every token of a sequence has something to show)."""
    text = tokenizer.decode([token_id])
    if "\ufffd" in text:
        return str(tokenizer.convert_ids_to_tokens(token_id))
    return str(text)


def bos_windows(ids: torch.Tensor, bos: int | None, seq_len: int) -> list[torch.Tensor]:
    """``ids`` chunked in order into windows of ``seq_len``, each starting with ``bos``
    (when there is one) followed by up to ``seq_len - 1`` tokens."""
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if bos is None:
        return list(ids.split(seq_len))
    prefix = torch.tensor([bos], dtype=torch.int64)
    return [torch.cat([prefix, chunk]) for chunk in ids.split(seq_len - 1)]
