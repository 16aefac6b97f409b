"""A decoder LLM as a dense retriever: text formats, EOS handling, pooling, bidirectional attention.

Conventions follow BMRetriever and the STM release (paper digest section 3.3): queries are
``"{instruction}\\nQuery: {query}"``, passages ``"Represent this passage\\npassage: {passage}"``,
an EOS token is appended by the tokenizer itself (so a saved sentence-transformers folder does the
same), padding is on the left with pad = EOS, and the embedding is the last token's hidden state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers.processors import TemplateProcessing
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from stm.config import FormatConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def ensure_eos(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make the tokenizer append EOS to every text (BOS kept where the model uses one).

    Done in the tokenizer's post-processor rather than by string concatenation, so truncation
    keeps the EOS and an exported sentence-transformers folder embeds exactly like training.
    """
    if tokenizer.eos_token is None:
        raise ValueError("tokenizer has no EOS token; last-token pooling needs one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = tokenizer("a")["input_ids"]
    if ids and ids[-1] == tokenizer.eos_token_id:
        return tokenizer
    eos, bos = tokenizer.eos_token, tokenizer.bos_token
    uses_bos = bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    special = [(eos, tokenizer.eos_token_id)]
    if uses_bos:
        special.append((bos, tokenizer.bos_token_id))
    prefix = f"{bos} " if uses_bos else ""
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{prefix}$A {eos}", pair=f"{prefix}$A {eos} $B:1 {eos}:1", special_tokens=special
    )
    if tokenizer("a")["input_ids"][-1] != tokenizer.eos_token_id:
        raise RuntimeError(f"could not make {type(tokenizer).__name__} append EOS")
    return tokenizer


def set_bidirectional(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Disable (or restore) the causal mask, as the paper does after LLM2Vec.

    transformers builds a bidirectional mask when ``config.is_causal`` is False (Llama, Qwen, Phi);
    Gemma 3 has its own ``use_bidirectional_attention`` switch. The attention modules' own
    ``is_causal`` flag is what SDPA uses when no mask is passed, so it is flipped too.
    """
    cfg = model.config
    cfg.is_causal = not enabled
    if hasattr(cfg, "use_bidirectional_attention"):
        cfg.use_bidirectional_attention = enabled
    for module in model.modules():
        if hasattr(module, "is_causal") and isinstance(module.is_causal, bool):
            module.is_causal = not enabled
    return model


def load_backbone(
    name_or_path: str, dtype: str = "float32", bidirectional: bool = False, revision: str | None = None
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load a decoder (without LM head) and its tokenizer, prepared for embedding."""
    tokenizer = ensure_eos(AutoTokenizer.from_pretrained(name_or_path, revision=revision))
    tokenizer.padding_side = "left"
    model = AutoModel.from_pretrained(name_or_path, dtype=DTYPES[dtype], revision=revision, attn_implementation="sdpa")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    set_bidirectional(model, bidirectional)
    return model, tokenizer


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Last-token or mean pooling; works for left and right padding."""
    if mode == "lasttoken":
        # index of the last non-pad token of each row (for left padding: always the final position)
        last = attention_mask.shape[1] - 1 - attention_mask.flip(1).int().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling {mode!r}")


@dataclass
class TextFormat:
    """Turns raw queries and passages into model input strings."""

    fmt: FormatConfig

    def query(self, query: str, instruction: str) -> str:
        text = self.fmt.query_template.format(instruction=instruction, query=query)
        return text.lstrip("\n") if not instruction else text

    def passage(self, passage: str) -> str:
        return self.fmt.passage_template.format(passage=passage)


class Retriever(nn.Module):
    """A backbone (optionally with LoRA) plus formats and pooling; ``embed`` returns raw vectors."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, fmt: FormatConfig):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.text = TextFormat(fmt)
        self.tokenizer.padding_side = fmt.padding_side

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, self.fmt.pooling)

    def embed(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        return self(**self.tokenize(texts, max_length))

    def embed_queries(self, queries: Sequence[str], instructions: Sequence[str] | str) -> torch.Tensor:
        if isinstance(instructions, str):
            instructions = [instructions] * len(queries)
        texts = [self.text.query(q, i) for q, i in zip(queries, instructions, strict=True)]
        return self.embed(texts, self.fmt.max_query_tokens)

    def embed_passages(self, passages: Sequence[str]) -> torch.Tensor:
        return self.embed([self.text.passage(p) for p in passages], self.fmt.max_passage_tokens)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], max_length: int, batch_size: int = 32) -> torch.Tensor:
        """Inference encoding, sorted by length so each batch pads little; returns float32 on CPU."""
        if not texts:
            return torch.empty(0, self.model.config.hidden_size)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty(len(texts), self.model.config.hidden_size)
        was_training = self.training
        self.eval()
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.embed([texts[i] for i in idx], max_length).float().cpu()
        self.train(was_training)
        return out
