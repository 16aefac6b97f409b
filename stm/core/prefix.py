"""The frozen prefix, computed once: hidden states after the first P decoder layers, cached across models.

When LoRA touches only the top K layers of an N-layer decoder, layers 1..N-K are the base model's in every model of
a run: the untrained backbone, each expert, every in-memory merge candidate (the Linear and TIES deltas are zero
there) and the final merges. So the input of layer P = N-K is a function of the batch's token ids and mask alone,
and every model after the first can start at layer P. This module is a speed-up of our evaluation harness, not part
of any model: a folder we ship loads with plain ``SentenceTransformer(path)`` and embeds the same numbers without it
(``tests/test_frozen_prefix.py`` checks ``torch.equal`` for an expert, a Linear and a TIES merge).

How it stays exact:

* the key is (fingerprint, batch): the fingerprint hashes every tensor of the embedding and of layers 0..P-1 as
  the model holds them (plus the decoder's config, dtype and torch version), so a model whose prefix differs in a
  single bit misses; the batch is the ``input_ids`` and ``attention_mask`` sentence-transformers built, so a hit
  feeds layer P exactly the tensor the full forward would have computed for that batch;
* sentence-transformers sorts texts by length and batches them the same way for every model, and our encoder
  always encodes a sorted set of texts, so the same batches recur across models;
* only inference is cached (``torch.is_grad_enabled()`` false); a training forward never touches it.

Measured on SmolLM2 cut to 8 layers with LoRA on the top 4: a cached evaluation runs 4 of 8 layers (about 2x),
and every merge candidate after the first runs only the top K layers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from stm.io import atomic_path

log = logging.getLogger(__name__)
_VOLATILE_CONFIG = {"_name_or_path", "transformers_version", "architectures", "num_hidden_layers", "_commit_hash",
                    "auto_map", "torch_dtype", "dtype", "pad_token_id", "id2label", "label2id", "is_causal"}


def decoder_stack(module: nn.Module) -> nn.Module:
    """The decoder stack (the module with ``embed_tokens`` and ``layers``) inside a bare, causal-LM or PEFT model."""
    for _, m in module.named_modules():
        if isinstance(getattr(m, "layers", None), nn.ModuleList) and hasattr(m, "embed_tokens"):
            return m
    raise TypeError(f"{type(module).__name__}: no decoder with embed_tokens and layers found")


def first_adapted_layer(decoder: nn.Module) -> int | None:
    """Index of the lowest decoder layer that carries a LoRA module; None when no layer does."""
    for i, layer in enumerate(decoder.layers):
        if any(isinstance(m, BaseTunerLayer) for m in layer.modules()):
            return i
    return None


def _tensor_bytes(t: torch.Tensor):
    return t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()


def _passthrough(hidden_states=None, *args, **kwargs):
    return hidden_states if hidden_states is not None else kwargs["hidden_states"]


class PrefixCache:
    """Hidden states entering layer ``P``, keyed by the prefix's fingerprint and the batch.

    ``layers``: P for models without a LoRA adapter (the backbone, a folded merge); a model with an adapter uses the
    index of its lowest adapted layer, and the weights' fingerprint decides whether two models share an entry.
    ``folder``: also keep the entries on disk (``.cache/prefix``), so later stages of the run reuse them."""

    def __init__(self, layers: int | None, folder: Path | None = None):
        self.layers = layers
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0
        self._fingerprints: dict[tuple, str] = {}

    # ------------------------------------------------------------------------------------------ keys
    def prefix_layers(self, decoder: nn.Module) -> int:
        adapted = first_adapted_layer(decoder)
        p = adapted if adapted is not None else self.layers
        return max(0, min(p or 0, len(decoder.layers)))

    def fingerprint(self, decoder: nn.Module, p: int) -> str:
        tensors = [("embed", n, t) for n, t in decoder.embed_tokens.state_dict(keep_vars=True).items()]
        for i in range(p):
            tensors += [(f"layer{i}", n, t) for n, t in decoder.layers[i].state_dict(keep_vars=True).items()]
        memo = (id(decoder), p, tuple((t.data_ptr(), t._version) for _, _, t in tensors))
        if memo in self._fingerprints:
            return self._fingerprints[memo]
        h = hashlib.sha256()
        config = {k: v for k, v in decoder.config.to_dict().items() if k not in _VOLATILE_CONFIG}
        causal = getattr(decoder.config, "is_causal", None) is not False  # None (as loaded) and True are both causal
        h.update(json.dumps([config, causal, p, torch.__version__],
                            sort_keys=True, default=str).encode())
        for where, name, t in tensors:
            h.update(f"{where}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(_tensor_bytes(t))
        self._fingerprints[memo] = fp = h.hexdigest()[:32]
        return fp

    @staticmethod
    def batch_key(fingerprint: str, features: dict) -> str:
        h = hashlib.sha256(fingerprint.encode())
        for name in ("input_ids", "attention_mask"):
            t = features[name]
            h.update(f"{name}:{tuple(t.shape)}".encode())
            h.update(_tensor_bytes(t))
        return h.hexdigest()[:40]

    # ------------------------------------------------------------------------------------------ store
    def _file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pt"

    def get(self, key: str) -> torch.Tensor | None:
        if key in self.memory:
            return self.memory[key]
        if self.folder is not None and self._file(key).exists():
            t = torch.load(self._file(key), map_location="cpu", weights_only=True)
            self.memory[key] = t
            return t
        return None

    def put(self, key: str, hidden: torch.Tensor) -> None:
        hidden = hidden.detach().to("cpu", copy=True)  # host memory: a GPU keeps its memory for the model
        self.memory[key] = hidden
        if self.folder is not None and not self._file(key).exists():
            self._file(key).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self._file(key)) as tmp:
                torch.save(hidden.cpu(), tmp)

    # ------------------------------------------------------------------------------------------ hooks
    @contextmanager
    def attached(self, model):
        """Within the block, inference forwards of ``model`` start at layer P when the batch's prefix is cached."""
        decoder = decoder_stack(model[0].model)
        p = self.prefix_layers(decoder)
        if p == 0 or p >= len(decoder.layers):
            yield self
            return
        fp = self.fingerprint(decoder, p)
        layers = decoder.layers
        state: dict = {}

        def before(_module, args):
            if torch.is_grad_enabled():
                state.clear()
                return
            features = args[0]
            key = self.batch_key(fp, features)
            cached = self.get(key)
            if cached is not None:
                cached = cached.to(features["input_ids"].device)
            state.update(key=key, cached=cached)
            if cached is not None:
                self.hits += 1
                for layer in layers[:p]:
                    layer.forward = _passthrough
            else:
                self.misses += 1

        def into_layer(_module, args, kwargs):
            if not state:
                return None
            if state["cached"] is None:
                self.put(state["key"], args[0] if args else kwargs["hidden_states"])
                return None
            if args:
                return (state["cached"], *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": state["cached"]}

        def restore():
            for layer in layers[:p]:
                layer.__dict__.pop("forward", None)
            state.clear()

        def after(_module, _args, _output):
            restore()

        handles = [model[0].register_forward_pre_hook(before),
                   layers[p].register_forward_pre_hook(into_layer, with_kwargs=True),
                   model[0].register_forward_hook(after)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            restore()

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self.memory)}
