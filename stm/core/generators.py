"""Text generators behind one interface, chosen by name from a registry.

* ``local``: a Hugging Face causal LM run in-process with batched generation (SmolLM2 by default;
  chat template when the model has one, plain completion otherwise).
* ``openai``: any endpoint speaking the OpenAI chat API (vLLM, OpenAI, Ollama) via the official
  ``openai`` client. The key is read from an environment variable and never stored anywhere.

A generator returns ``None`` for a prompt it could not answer (an API error after retries); callers
count those and fall back. An unreachable endpoint fails fast with :class:`GeneratorError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from stm.config import GenerationConfig
from stm.core.assets import resolve_model
from stm.registry import Registry

log = logging.getLogger(__name__)


class GeneratorError(RuntimeError):
    pass


class Generator(Protocol):
    id: str

    def generate(self, prompts: Sequence[str], seed_offset: int = 0) -> list[str | None]: ...

    def settings(self) -> dict: ...


GENERATORS: Registry[Callable[[GenerationConfig], Generator]] = Registry("generator", "generator.kind")


def build_generator(cfg: GenerationConfig) -> Generator:
    return GENERATORS.lookup(cfg.kind)(cfg)


def _public_settings(cfg: GenerationConfig) -> dict:
    # everything that moves the output, and nothing secret (the key itself is never in cfg)
    keep = ("kind", "model", "style", "base_url", "max_new_tokens", "temperature", "top_p", "seed")
    return {k: getattr(cfg, k) for k in keep}


MIN_SHARED_TOKENS = 16  # a shorter shared prefix is not worth a separate forward


def _sliding_window(config) -> bool:
    """Sliding-window layers (Gemma 3's, Mistral's) count padding inside the window, so a padded batch and the
    prefix-cached one see different tokens: no prefix cache for them (measured: other greedy outputs on Gemma 3)."""
    return "sliding_attention" in (getattr(config, "layer_types", None) or []) or bool(
        getattr(config, "sliding_window", None))


def _common_prefix(ids: Sequence[Sequence[int]]) -> int:
    n = min(len(x) for x in ids)
    first = ids[0]
    for i in range(n):
        if any(x[i] != first[i] for x in ids):
            return i
    return n


@GENERATORS.register("local")
class LocalGenerator:
    def __init__(self, cfg: GenerationConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer


        self.cfg = cfg
        path = resolve_model(cfg.model)
        self.id = f"local:{cfg.model}"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # generator.dtype; `auto` is bf16 where it is native (stm.config.native_bf16): measured on an AMD EPYC Zen 4
        # (AVX512-BF16), 16 Med-Synth prompts, 24 new tokens: 3.75-3.85 s against 6.5-7.1 s in float32; where bf16 is
        # emulated (AVX-512F alone) it took 30.2 s against float32's 16.4 s (32 new tokens), so there auto keeps float32
        self.dtype = cfg.dtype
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype)).eval()
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.chat = has_template if cfg.style == "auto" else cfg.style == "chat"
        self._torch = torch

    def settings(self) -> dict:
        return _public_settings(self.cfg) | {"chat_template": self.chat, "dtype": self.dtype}

    def _render(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def _inputs(self, prompts: Sequence[str]) -> dict:
        """The batch, left-padded; when every prompt starts with the same tokens (a few-shot template's examples),
        those are run once: ``[shared prefix][padding][rest]``, with the prefix's keys and values computed for one row
        and repeated (the ``cache``), the positions following the attention mask as without the cache.
        Measured on 2 cores (Intel Xeon, float32), 48 Med-Synth prompts (about 224 tokens, 105 of them the shared
        examples), 24 new tokens, greedy: 20.2 s against 28.5 s, the same 48 questions (docs/measurements.md)."""
        torch = self._torch
        ids = [self.tokenizer(self._render(p), truncation=True, max_length=768)["input_ids"] for p in prompts]
        shared = _common_prefix(ids) if len(ids) > 1 else 0
        shared = min(shared, min(len(x) for x in ids) - 1)  # at least one token of each prompt is fed, not cached
        cache = None
        if shared >= MIN_SHARED_TOKENS and not _sliding_window(self.model.config):
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                self.model(input_ids=torch.tensor([ids[0][:shared]]), cache=cache, use_cache=True)
            cache.batch_repeat_interleave(len(ids))
        else:
            shared = 0
        width = max(len(x) for x in ids) - shared
        pad = self.tokenizer.pad_token_id
        rows = [x[:shared] + [pad] * (width - len(x) + shared) + x[shared:] for x in ids]
        mask = [[1] * shared + [0] * (width - len(x) + shared) + [1] * (len(x) - shared) for x in ids]
        batch = {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(mask)}
        if cache is not None:
            batch["cache"] = cache
        return batch

    def generate(self, prompts: Sequence[str], seed_offset: int = 0) -> list[str | None]:
        torch = self._torch
        torch.manual_seed(self.cfg.seed + seed_offset)
        batch = self._inputs(prompts)
        sample = self.cfg.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=sample,
                temperature=self.cfg.temperature if sample else None,
                top_p=self.cfg.top_p if sample else None,
                pad_token_id=self.tokenizer.pad_token_id,
                repetition_penalty=1.15,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        if not self.chat:  # a completion continues the few-shot pattern: keep the first block only
            texts = [t.strip().split("\n\n")[0] for t in texts]
        return [t.strip() for t in texts]


@GENERATORS.register("openai")
class OpenAIGenerator:
    def __init__(self, cfg: GenerationConfig):
        import openai

        self.cfg = cfg
        self.id = f"openai:{cfg.model}@{cfg.base_url or 'default'}"
        key = os.environ.get(cfg.api_key_env)
        if not key and cfg.base_url is None:
            raise GeneratorError(f"generator {self.id}: environment variable {cfg.api_key_env} is not set")
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=cfg.base_url, api_key=key or "EMPTY", timeout=cfg.timeout_s, max_retries=cfg.max_retries
        )

    def settings(self) -> dict:
        return _public_settings(self.cfg)

    def _one(self, prompt: str, seed: int) -> str | None:
        try:
            resp = self.client.chat.completions.create(
                model=self.cfg.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=self.cfg.max_new_tokens,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                seed=seed,
            )
        except self._openai.APIConnectionError as e:
            raise GeneratorError(f"generator {self.id}: endpoint unreachable ({e.__class__.__name__})") from None
        except self._openai.APIError as e:  # after the client's own retries and back-off
            log.warning("generator %s: request failed (%s); row counted as failed", self.id, e.__class__.__name__)
            return None
        return (resp.choices[0].message.content or "").strip()

    def generate(self, prompts: Sequence[str], seed_offset: int = 0) -> list[str | None]:
        """``cfg.concurrency`` requests in flight; answers in prompt order, whatever order they arrive in."""
        seeds = [self.cfg.seed + seed_offset + k for k in range(len(prompts))]
        if self.cfg.concurrency == 1 or len(prompts) == 1:
            return [self._one(p, s) for p, s in zip(prompts, seeds, strict=True)]
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(prompts))) as pool:
            return list(pool.map(self._one, prompts, seeds))
