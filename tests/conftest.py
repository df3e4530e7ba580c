"""Shared fixtures: tiny random-weight models of every family, a tiny tokenizer, an
isolated cache.  Nothing here downloads anything."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_LANGUAGES = ["en", "fr", "de", "ru", "zh", "ja"]


def _tiny_config(model_type: str, vocab_size: int):
    import transformers as T

    common = {"vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    llama_like = {
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 512,
        **common,
    }
    configs = {
        "llama": lambda: T.LlamaConfig(**llama_like),
        "mistral": lambda: T.MistralConfig(**llama_like),
        "qwen2": lambda: T.Qwen2Config(**llama_like),
        "qwen3": lambda: T.Qwen3Config(**llama_like),
        "gemma": lambda: T.GemmaConfig(**llama_like),
        "gemma2": lambda: T.Gemma2Config(**llama_like),
        "gemma3_text": lambda: T.Gemma3TextConfig(**llama_like, sliding_window=16),
        "gemma3": lambda: T.Gemma3Config(
            text_config={**llama_like, "sliding_window": 16},
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 48,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "image_size": 28,
                "patch_size": 14,
            },
            mm_tokens_per_image=4,
        ),
        "phi3": lambda: T.Phi3Config(**llama_like),
        "gpt2": lambda: T.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_inner=48, n_positions=512, **common
        ),
        "bloom": lambda: T.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **common),
        "opt": lambda: T.OPTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=48,
            word_embed_proj_dim=32,
            max_position_embeddings=512,
            **common,
        ),
        "gpt_neox": lambda: T.GPTNeoXConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=512,
            **common,
        ),
    }
    return configs[model_type]()


FAMILY_TYPES = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gemma3",
    "phi3",
    "gpt2",
    "bloom",
    "opt",
    "gpt_neox",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in a second on the embedded corpus."""
    from langneurons.tiny import train_tokenizer

    return train_tokenizer(TINY_LANGUAGES, vocab_size=400)


@pytest.fixture(scope="session")
def make_tiny_model(tiny_tokenizer) -> Callable[[str], object]:
    """Build a seeded tiny random-weight causal LM of a family, wrapped as LoadedModel."""
    from transformers import AutoModelForCausalLM

    from langneurons.models import LoadedModel

    def make(model_type: str = "llama", seed: int = 0) -> LoadedModel:
        torch.manual_seed(seed)
        config = _tiny_config(model_type, len(tiny_tokenizer))
        model = AutoModelForCausalLM.from_config(config)
        return LoadedModel.from_model(model, tiny_tokenizer, f"tiny-{model_type}")

    return make


@pytest.fixture(scope="session")
def save_tiny_model(tiny_tokenizer) -> Callable[[str, Path], Path]:
    """Save a seeded tiny model of a family with the tokenizer, like any HF checkpoint."""
    from transformers import AutoModelForCausalLM

    def save(model_type: str, folder: Path) -> Path:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_tiny_config(model_type, len(tiny_tokenizer)))
        model.save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)
        return folder

    return save


@pytest.fixture
def tiny_model(make_tiny_model):
    return make_tiny_model("llama")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty statistics cache.  The embedded model's converted copy
    stays where a user's would be (``LANGNEURONS_MODELS`` or the default cache), so it is
    converted once per machine, not once per test."""
    from langneurons.paths import models_dir

    monkeypatch.setenv("LANGNEURONS_MODELS", str(models_dir()))
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LANGNEURONS_CACHE", str(root))
    return root


def _dashboard_servers_started_after(pid: int) -> list[int]:
    """Streamlit servers of LangNeurons started after process ``pid`` (Linux ``/proc``)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []

    def started(p: int) -> int:
        return int((proc / str(p) / "stat").read_text().rsplit(")", 1)[1].split()[19])

    since = started(pid)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ours = "streamlit" in command and "dashboard/app.py" in command
            if ours and started(int(entry.name)) >= since:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test left a dashboard server running (and stop it)."""
    import signal

    left = _dashboard_servers_started_after(os.getpid())
    if not left:
        return
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"ERROR: tests left dashboard servers running (pids {left}); stopped")
    session.exitstatus = 1
