"""Prompt optimizers (a registry): ``none``, ``gp`` (GP-N generic prompt pools) and ``gepa``.

Every optimizer writes ``prompts/selected.json``, the versioned file training reads::

    {"optimizer": "gp", "pools": {"*": ["prompt 1", ...]} | {"<split>": [...]}, ...}

Training assigns each query one prompt of its split's pool at random (seeded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

from stm.config import PromptsConfig, TrainingConfig, dump
from stm.core import retriever as R
from stm.core.assets import resolve_model
from stm.core.filters import PROMPT_META, check, clean
from stm.core.generation_cache import generate_cached
from stm.core.generators import build_generator
from stm.core.tasks import SPLIT_INSTRUCTIONS
from stm.data.pubmed import sentences
from stm.io import write_json
from stm.prompts.gepa_adapter import optimize_split
from stm.registry import Registry

log = logging.getLogger(__name__)

# Appendix B.2.1, verbatim.
GP_PROMPT = """You are an expert in information retrieval prompt engineering.
Generate a creative and diverse prompt specifically for DOCUMENT RETRIEVAL tasks.
The prompt should help a retrieval model find relevant documents for any query.
Use a different style/approach from these examples:
- Direct retrieval instruction format
- Document ranking format
- Relevance scoring format
- Query-document matching format
- Information seeking format
- Context-aware retrieval format
- Domain-specific retrieval format
- Simple document finding format
Make it unique and varied. The prompt should be effective for DOCUMENT RETRIEVAL.
Generate only the prompt text, no explanations, do not specify any domain or document type to avoid confusing the model:"""

# (config, output folder, retriever factory) -> selected pools; the factory builds the model GEPA scores with
OPTIMIZERS: Registry[Callable[[PromptsConfig, Path, Path, Callable | None], dict]] = Registry("prompt optimizer",
                                                                                      "prompts.optimizer")


@OPTIMIZERS.register("none")
def no_optimization(cfg: PromptsConfig, out: Path, dev: Path, retriever: Callable | None = None) -> dict:
    return {"optimizer": "none", "pools": {s: [SPLIT_INSTRUCTIONS[s]] for s in cfg.splits}}


def generic_prompts(cfg: PromptsConfig, out: Path, target: int) -> tuple[list[str], dict]:
    """Up to ``target`` distinct generic retrieval prompts; returns (prompts, counts).

    The one prompt is sampled one batch at a time (sample ids 0..15, 16..31, ...: distinct cache rows and seeds)
    until ``target`` pass the filters, so a pool of 10 costs two or three batches and a pool of 100 extends the same
    cache: its first 10 prompts are the 10 of the smaller pool."""
    gen = build_generator(cfg.generator)
    batch = cfg.generator.batch_size
    kept: list[str] = []
    counts: dict[str, int] = {}
    drawn, cap = 0, 12 * target + batch  # a generator that fails the filters always stops here
    while len(kept) < target and drawn < cap:
        outs = generate_cached(gen, [GP_PROMPT] * batch, out / "cache" / "gp.jsonl", batch,
                               desc="GP prompts", sample_ids=range(drawn, drawn + batch))
        drawn += batch
        for o in outs:
            # a prompt is an instruction, not an essay: keep the first sentence. Small generators ramble on,
            # and a long prompt leaves no room for the query within max_query_tokens (training truncates)
            whole = clean(o).strip('"')
            if cfg.gp_as_generated:  # the paper trains on the prompts as written: only empty answers are dropped
                text = whole
                reason = "generator_failed" if o is None else ("empty" if not whole else None)
            else:
                text = next(iter(sentences(whole)), "")
                reason = "generator_failed" if o is None else (
                    check(whole, min_words=5, max_words=10_000, meta=PROMPT_META)   # meta-commentary anywhere
                    or check(text, min_words=5, max_words=cfg.gp_max_words, meta=PROMPT_META))
            if reason is None and text.lower() in {k.lower() for k in kept}:
                reason = "duplicate"
            counts[reason or "kept"] = counts.get(reason or "kept", 0) + 1
            if reason is None and len(kept) < target:
                kept.append(text)
    return kept, {"generator": gen.id, "settings": gen.settings(), "counts": counts, "sampled": drawn}


@OPTIMIZERS.register("gp")
def gp(cfg: PromptsConfig, out: Path, dev: Path, retriever: Callable | None = None) -> dict:
    """GP-N with N = ``gp_size``: only the main line's pool is generated here (the larger pools: :func:`gp_pools`)."""
    chosen, meta = generic_prompts(cfg, out, cfg.gp_size)
    if not chosen:
        raise RuntimeError(f"GP: the generator produced no usable prompt in {meta['sampled']} samples; counts: "
                           f"{meta['counts']}")
    return {"optimizer": "gp", "size": cfg.gp_size, "actual_size": len(chosen), "pools": {"*": chosen}, **meta}


def gp_pools(cfg: PromptsConfig, out: Path) -> dict:
    """Table 10's pools, GP-N for every N of ``gp_sizes``, nested (each the first N prompts of the largest): written
    to ``out/gp.json`` (``Layout.prompts``) for the prompt-pool ablation, whatever optimizer the main line uses."""
    out = Path(out)
    prompts, meta = generic_prompts(cfg, out, max(cfg.gp_sizes))
    table = {"pools": {str(n): prompts[:n] for n in cfg.gp_sizes}, **meta, "config": dump(cfg)}
    write_json(out / "gp.json", table)
    return table


@OPTIMIZERS.register("gepa")
def gepa_optimizer(cfg: PromptsConfig, out: Path, dev: Path, retriever: Callable | None = None) -> dict:
    if retriever is None:
        raise ValueError("prompts.optimizer gepa scores instructions with a retriever: pass retriever=")
    model = retriever()
    pools, history = {}, {}
    for split in cfg.splits:
        best, hist = optimize_split(cfg, split, out, dev, model)
        pools[split] = [best]
        history[split] = hist
    write_json(out / "gepa_history.json", history)
    return {"optimizer": "gepa", "budget": cfg.gepa.budget, "pools": pools}


def backbone_retriever(tcfg: TrainingConfig) -> Callable:
    """A factory for the model GEPA scores instructions with: the training backbone in its format, untrained."""
    return partial(R.build, resolve_model(tcfg.backbone), tcfg.format, "bfloat16", tcfg.bidirectional)


def run(cfg: PromptsConfig, out: Path, dev: Path, retriever: Callable | None = None) -> dict:
    """Write ``out/selected.json``, the main line's prompts (``Layout.prompts``); ``dev``: the held-out triples
    GEPA tunes on (``Layout.splits_dev``); ``retriever`` builds the model that GEPA scores with."""
    out = Path(out)
    selected = OPTIMIZERS.lookup(cfg.optimizer)(cfg, out, dev, retriever) | {"config": dump(cfg)}
    write_json(out / "selected.json", selected)
    return selected
