"""Small models and tokenizers built on the spot, without a model hub: for tests, for
checking a GPU machine, and for trying the tool's mechanics in seconds.

:func:`train_tokenizer` trains a byte-level BPE tokenizer on the embedded UDHR in a
second or two; :func:`random_gemma3` saves a seeded random-weight Gemma 3 text model of
a real shape with it.  Random weights compute at the speed of trained ones of the same
shape, but their neurons mean nothing: use them for arithmetic and speed, not findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .corpus import load_corpus

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
GEMMA3_SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    # name: (layers, hidden, neurons, heads, kv heads, head dim)
    "tiny": (2, 64, 128, 4, 1, 16),
    "270m": (18, 640, 2048, 4, 1, 256),  # the embedded default's shape
    "1b": (26, 1152, 6912, 4, 1, 256),  # Gemma 3 1B's
}


def train_tokenizer(languages: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (``PreTrainedTokenizerFast``) trained on the embedded
    UDHR texts of ``languages``; ids 0-3 are ``<pad> <bos> <eos> <unk>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = load_corpus("udhr", list(languages))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(
        (p for code in languages for p in corpus.texts[code].paragraphs), trainer
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def random_gemma3(folder: str | Path, shape: str, tokenizer: Any, seed: int = 0) -> Path:
    """Save a seeded random-weight Gemma 3 text model of ``shape`` (see
    :data:`GEMMA3_SHAPES`) with ``tokenizer`` into ``folder``, loadable like any
    checkpoint folder."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(gemma3_config(shape, tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def gemma3_config(shape: str, tokenizer: Any) -> Any:
    """The ``Gemma3TextConfig`` of ``shape`` (see :data:`GEMMA3_SHAPES`) for ``tokenizer``."""
    from transformers import Gemma3TextConfig

    layers, hidden, neurons, heads, kv_heads, head_dim = GEMMA3_SHAPES[shape]
    return Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=neurons,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def tiny_model(languages: Sequence[str] = ("en", "fr", "de"), seed: int = 0) -> Any:
    """A seeded random-weight Gemma 3 of the ``tiny`` shape (2 layers of 128 neurons)
    with a tokenizer trained on ``languages``, loaded in memory in a second or two: for
    trying the library's calls without the embedded model (its neurons mean nothing).

    >>> lm = tiny_model()
    >>> lm.num_layers, lm.num_neurons
    (2, 128)
    """
    from transformers import AutoModelForCausalLM

    from .models import LoadedModel

    tokenizer = train_tokenizer(languages, vocab_size=400)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(gemma3_config("tiny", tokenizer))
    return LoadedModel.from_model(model, tokenizer, "tiny-gemma3")
