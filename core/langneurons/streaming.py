"""Corpora at scale: Hugging Face datasets, streamed, never held in memory whole.

A source ``hf:NAME`` names a dataset on the hub (``hf:wikimedia/wikipedia``), or a
builder for local files (``hf:json``, ``hf:text``, ``hf:parquet`` with
``data_files``).  Per language it reads ``config`` and ``data_files`` with ``{lang}``
replaced by the code, streams the ``text_field`` of each record in order, applies the
same deterministic split as in-memory corpora (record ``i`` is held out when
``floor((i+1)*f) > floor(i*f)``), tokenizes the kept lines in the same pieces of about
1 MB as a text read from a file (:func:`langneurons.corpus.text_pieces`), and stops at
the first piece that meets the token budget.  The token ids are the first ``max_tokens``
of the identification text, exactly as if the whole text had been read, so a streamed
dataset and the same text from files give the same windows and the same counts.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import corpus
from .corpus import MIN_IDENTIFY_TOKENS, bos_windows, paragraphs_of, piece_ids
from .errors import CorpusError

PREFIX = "hf:"


@dataclass(frozen=True)
class HFSource:
    """Where one language's records come from; ``{lang}`` in config/data_files is filled.

    ``{lang}`` is the language code, or the dataset's own name for it when
    ``language_names`` maps the code (FLORES+ calls French ``fra_Latn``).
    """

    name: str
    config: str | None = None
    split: str = "train"
    text_field: str = "text"
    data_files: str | None = None
    language_names: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str, **options: Any) -> HFSource:
        if not spec.startswith(PREFIX) or len(spec) == len(PREFIX):
            raise CorpusError(f"{spec!r} is not a dataset source; write hf:NAME.")
        names = options.pop("language_names", None)
        if isinstance(names, str):
            names = parse_language_names(names)
        if names:
            options["language_names"] = tuple(sorted(dict(names).items()))
        return cls(spec[len(PREFIX) :], **{k: v for k, v in options.items() if v is not None})

    def dataset_language(self, language: str) -> str:
        """The dataset's name for ``language`` (the code itself unless mapped)."""
        return dict(self.language_names).get(language, language)

    def records(self, language: str) -> Generator[str, None, None]:
        """The texts of ``language``'s records, streamed in order."""
        try:
            import datasets
        except ImportError:
            raise CorpusError(
                "Dataset corpora need the package 'datasets': pip install 'langneurons[scale]'."
            ) from None
        name = self.dataset_language(language)
        config = self.config.format(lang=name) if self.config else None
        files = self.data_files.format(lang=name) if self.data_files else None
        try:
            stream = datasets.load_dataset(
                self.name, config, split=self.split, streaming=True, data_files=files
            )
        except Exception as exc:
            # Some builders fail on an empty file with a bare StopIteration.
            reason = "it has no records" if isinstance(exc, StopIteration) else str(exc)
            raise CorpusError(
                f"Cannot open dataset {self.name!r} (config {config!r}, files {files!r}) for "
                f"{language!r}: {reason or type(exc).__name__}"
            ) from exc
        iterator = iter(stream)
        for index in itertools.count():
            try:
                record = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise CorpusError(
                    f"Cannot read record {index} of dataset {self.name!r} (config {config!r}, "
                    f"files {files!r}) for {language!r}: {exc or type(exc).__name__}"
                ) from exc
            if self.text_field not in record:
                raise CorpusError(
                    f"Record {index} of {self.name!r} has no field {self.text_field!r}; its "
                    f"fields are {', '.join(record)}. Pass --text-field."
                )
            yield str(record[self.text_field])

    def check(self, language: str) -> None:
        """Open ``language``'s stream and read its first record, to fail early and clearly."""
        records = self.records(language)
        try:
            if next(records, None) is None:
                raise CorpusError(
                    f"Dataset {self.name!r} has no records for {language!r} (config "
                    f"{self.config!r}, files {self.data_files!r})."
                )
        finally:
            records.close()

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> HFSource:
        """The source a run's ``meta.json`` recorded (see :meth:`describe`)."""
        return cls.parse(
            described["source"],
            config=described.get("config"),
            split=described.get("dataset_split") or "train",
            text_field=described.get("text_field") or "text",
            data_files=described.get("data_files"),
            language_names=described.get("language_names") or None,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "source": f"{PREFIX}{self.name}",
            "config": self.config,
            "dataset_split": self.split,
            "text_field": self.text_field,
            "data_files": self.data_files,
            "language_names": dict(self.language_names),
        }


def parse_language_names(text: str) -> dict[str, str]:
    """``"en=eng_Latn,fr=fra_Latn"`` as a mapping from codes to a dataset's names."""
    names = {}
    for item in (part.strip() for part in text.split(",")):
        code, sep, name = item.partition("=")
        if not item or not sep or not code.strip() or not name.strip():
            raise CorpusError(
                f"Cannot read {item!r} in the language names {text!r}: write CODE=NAME pairs "
                "separated by commas, for example en=eng_Latn,fr=fra_Latn."
            )
        names[code.strip()] = name.strip()
    return names


def is_held_out(index: int, eval_fraction: float) -> bool:
    """Whether record ``index`` is held out for evaluation (the corpus split rule)."""
    return int((index + 1) * eval_fraction) > int(index * eval_fraction)


def held_out_text(
    tokenizer: Any,
    records: Iterator[str],
    *,
    max_tokens: int,
    eval_fraction: float,
    language: str = "",
) -> tuple[str, dict[str, Any]]:
    """The held-out records of a stream, read until they hold ``max_tokens`` tokens.

    These are the records ``compute`` skipped, so a model's NLL on them is measured on
    text its language neurons were not selected from.
    """
    if eval_fraction <= 0:
        raise CorpusError("This run held no records out (eval_fraction 0): nothing to evaluate.")
    lines: list[str] = []
    have = 0
    read = 0
    for index, text in enumerate(records):
        read = index + 1
        if not is_held_out(index, eval_fraction):
            continue
        kept = paragraphs_of(text)
        lines.extend(kept)
        have += sum(len(piece_ids(tokenizer, line)) for line in kept) + len(kept)
        if have >= max_tokens:
            break
    if not lines:
        raise CorpusError(f"The dataset has no held-out records for {language!r}.")
    return "\n".join(lines), {"records_read": read}


def streamed_windows(
    tokenizer: Any,
    records: Iterator[str],
    *,
    max_tokens: int,
    seq_len: int,
    eval_fraction: float,
    language: str = "",
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Windows of the first ``max_tokens`` identification tokens of a record stream.

    The kept lines are cut into the same pieces as :func:`~langneurons.corpus.text_ids`
    cuts a text, each finished piece is tokenized at once, and reading stops at the
    first piece that meets the budget (or at the end of the stream).  At most one piece
    (about ``TOKENIZE_PIECE_CHARS`` characters) of text is held, and the ids are exactly
    those of the same text read from a file.  Returns the windows and a record of what
    was read (records, hash of the text).
    """
    parts: list[torch.Tensor] = []  # ids of finished pieces
    have = 0
    piece: list[str] = []  # lines of the piece being read
    chars = 0
    digest = hashlib.sha256()
    read = 0

    def finish(final: bool) -> None:
        nonlocal have, piece, chars
        text = "\n".join(piece) + ("" if final else "\n")
        digest.update(text.encode())
        parts.append(piece_ids(tokenizer, text))
        have += len(parts[-1])
        piece, chars = [], 0

    for index, text in enumerate(records):
        read = index + 1
        lines = paragraphs_of(text)
        if is_held_out(index, eval_fraction) or not lines:
            continue
        for line in lines:
            if chars >= corpus.TOKENIZE_PIECE_CHARS:  # whole: the same cut as text_ids
                finish(final=False)
            piece.append(line)
            chars += len(line) + 1
        if have >= max_tokens:  # finished pieces do not depend on what follows
            break
    if piece:
        finish(final=True)
    ids = torch.cat(parts)[:max_tokens] if parts else torch.zeros(0, dtype=torch.int64)
    if len(ids) < MIN_IDENTIFY_TOKENS:
        raise CorpusError(
            f"Language {language!r} has only {len(ids)} tokens to count in the dataset; at "
            f"least {MIN_IDENTIFY_TOKENS} are needed."
        )
    info = {"records_read": read, "identify_sha256": digest.hexdigest()}
    return bos_windows(ids, getattr(tokenizer, "bos_token_id", None), seq_len), info
