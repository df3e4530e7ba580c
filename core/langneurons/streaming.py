"""Corpora at scale: Hugging Face datasets, streamed, never held in memory whole.

A source ``hf:NAME`` names a dataset on the hub (``hf:wikimedia/wikipedia``), or a
builder for local files (``hf:json``, ``hf:text``, ``hf:parquet`` with
``data_files``).  Per language it reads ``config`` and ``data_files`` with ``{lang}``
replaced by the code, streams the ``text_field`` of each record in order, applies the
same deterministic split as in-memory corpora (record ``i`` is held out when
``floor((i+1)*f) > floor(i*f)``), and stops one record after the token budget is
reached.  The token ids are the first ``max_tokens`` of the identification text,
exactly as if the whole text had been read, so a streamed dataset and the same text
from files give the same windows and the same counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .corpus import MIN_IDENTIFY_TOKENS, bos_windows, text_ids
from .errors import CorpusError

PREFIX = "hf:"


@dataclass(frozen=True)
class HFSource:
    """Where one language's records come from; ``{lang}`` in config/data_files is filled."""

    name: str
    config: str | None = None
    split: str = "train"
    text_field: str = "text"
    data_files: str | None = None

    @classmethod
    def parse(cls, spec: str, **options: Any) -> HFSource:
        if not spec.startswith(PREFIX) or len(spec) == len(PREFIX):
            raise CorpusError(f"{spec!r} is not a dataset source; write hf:NAME.")
        return cls(spec[len(PREFIX) :], **{k: v for k, v in options.items() if v is not None})

    def records(self, language: str) -> Iterator[str]:
        """The texts of ``language``'s records, streamed in order."""
        try:
            import datasets
        except ImportError:
            raise CorpusError(
                "Dataset corpora need the package 'datasets': pip install 'langneurons[scale]'."
            ) from None
        config = self.config.format(lang=language) if self.config else None
        files = self.data_files.format(lang=language) if self.data_files else None
        try:
            stream = datasets.load_dataset(
                self.name, config, split=self.split, streaming=True, data_files=files
            )
        except Exception as exc:
            raise CorpusError(
                f"Cannot open dataset {self.name!r} (config {config!r}, files {files!r}) for "
                f"{language!r}: {exc}"
            ) from exc
        for index, record in enumerate(stream):
            if self.text_field not in record:
                raise CorpusError(
                    f"Record {index} of {self.name!r} has no field {self.text_field!r}; its "
                    f"fields are {', '.join(record)}. Pass --text-field."
                )
            yield str(record[self.text_field])

    def describe(self) -> dict[str, Any]:
        return {
            "source": f"{PREFIX}{self.name}",
            "config": self.config,
            "split": self.split,
            "text_field": self.text_field,
            "data_files": self.data_files,
        }


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

    Returns the windows and a record of what was read (records, hash of the text).
    """
    kept: list[str] = []
    estimate = 0
    read = 0
    for index, text in enumerate(records):
        read = index + 1
        held_out = int((index + 1) * eval_fraction) > int(index * eval_fraction)
        paragraphs = [line.strip() for line in text.splitlines() if line.strip()]
        if held_out or not paragraphs:
            continue
        kept.extend(paragraphs)
        if estimate >= max_tokens + 16:
            # One whole record past the budget is read, so the text just after the cut is
            # the same as in the full text and the first max_tokens ids cannot change.
            break
        estimate += len(text_ids(tokenizer, "\n".join(paragraphs)))
    text = "\n".join(kept)
    ids = text_ids(tokenizer, text, max_tokens)
    if len(ids) < MIN_IDENTIFY_TOKENS:
        raise CorpusError(
            f"Language {language!r} has only {len(ids)} tokens to count in the dataset; at "
            f"least {MIN_IDENTIFY_TOKENS} are needed."
        )
    info = {"records_read": read, "identify_sha256": hashlib.sha256(text.encode()).hexdigest()}
    return bos_windows(ids, getattr(tokenizer, "bos_token_id", None), seq_len), info
