"""The merging stage: search weights on dev tasks, build the chosen merges with MergeKit, evaluate on test.

Experts are sentence-transformers folders holding a LoRA adapter. MergeKit merges full models, so each
expert (LoRA folded in) and the base are written as scratch HF folders beside the DVC output. A merge is
the experts' retriever (tokenizer, prompts, pooling, lengths) over the merged decoder, saved by
sentence-transformers: ``artifacts/merged/<method>`` loads with ``SentenceTransformer(path)`` and is
scored exactly that way.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from stm import paths
from stm.config import EvaluationConfig, MergingConfig, dump
from stm.core import retriever as R
from stm.core.cards import model_card
from stm.core.evaluation import Encoder, dev_score, evaluate, evaluate_model, prefix_cache
from stm.core.records import Evaluation, MergeReport, MethodResult
from stm.core.sampling import sample_record, selection_sets
from stm.io import atomic_path, read_json, sha256_file, sha256_text, write_json
from stm.merging.inmemory import DeltaMerger
from stm.merging.methods import SOURCE, get_method, mergekit_config, run_mergekit
from stm.merging.search import Candidate, ScoreCache, best, search

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def base_path(expert: Path) -> str:
    return read_json(Path(expert) / "adapter_config.json")["base_model_name_or_path"]


def _source_key(source: Path | str, dtype: str) -> str:
    """What a full-model folder was built from: the adapter's bytes, or the base's name."""
    if Path(source, "adapter_config.json").exists():
        parts = [sha256_file(Path(source, f)) for f in ADAPTER_FILES]
    else:
        parts = [str(source)]
    return sha256_text(json.dumps([*parts, dtype]))


def save_full_model(source: Path | str, out: Path, tokenizer_from: Path, dtype: str = "float32") -> Path:
    """An expert with its LoRA folded in, or the bare base, as a plain HF folder (MergeKit's input).

    The LoRA is folded in at float32 and the result saved in ``dtype``, the merge's own dtype: mergekit casts its
    inputs to that dtype anyway, so a bfloat16 merge gets the same numbers from half the disk.
    A folder left by an interrupted run is reused only if it was built from the same source and dtype."""
    key = _source_key(source, dtype)
    done = out / SOURCE
    if done.exists() and read_json(done).get("source_key") == key:
        return out
    shutil.rmtree(out, ignore_errors=True)
    if Path(source, "adapter_config.json").exists():
        decoder = R.transformer(R.merge_lora(R.load(source, "float32"))).model
        backbone = base_path(source)
    else:
        decoder, backbone = AutoModel.from_pretrained(str(source), dtype=torch.float32), str(source)
    with atomic_path(out) as tmp:
        decoder.to(R.DTYPES[dtype]).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(tmp)  # the experts' EOS-appending tokenizer
        write_json(tmp / SOURCE, {"source_key": key, "backbone_path": backbone})
    return out


def merged_retriever(template: Path, merged: Path, dtype: str) -> SentenceTransformer:
    """The experts' retriever over a merged decoder."""
    model = R.merge_lora(R.load(template, dtype))
    return R.with_decoder(model, AutoModel.from_pretrained(str(merged), dtype=R.DTYPES[dtype]).eval())


def portable(cfg: dict) -> dict:
    """A mergekit config as recorded in results: paths relative to the repository, not to this machine."""
    root = f"{paths.ROOT}/"
    return json.loads(json.dumps(cfg).replace(json.dumps(root)[1:-1], ""))


def search_fingerprint(method: str, adapter_dirs: list[Path], dev_specs, mcfg: MergingConfig,
                       ecfg: EvaluationConfig) -> str:
    """What a candidate's dev score depends on: expert weights, dev data, dtypes, metric weighting."""
    parts = {"method": method, "experts": [[sha256_file(d / f) for f in ADAPTER_FILES] for d in adapter_dirs],
             "dev": [t.record() for t in dev_specs], "eval_dtype": ecfg.dtype, "batch_size": ecfg.batch_size,
             "merge_dtype": mcfg.dtype, "ndcg_weight": mcfg.search.ndcg_weight}
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:24]


def run(mcfg: MergingConfig, ecfg: EvaluationConfig, adapters: dict[str, Path], tasks: Path, out_root: Path,
        results: Path, method_adapters: dict[str, dict[str, Path]] | None = None) -> MergeReport:
    """Search and build each method's merge of ``adapters`` ({expert: adapter}) into ``out_root/<method>``, scored on
    the tasks (embedded ones from the folder ``tasks``), the report into ``results``; ``method_adapters`` gives a
    method its own experts (``merging.variants``: Phi-4-mini's Linear merge of Med-Real PO)."""
    out_root = Path(out_root)
    names = list(adapters)
    method_adapters = method_adapters or {}
    # the dev sets candidates are scored on: seeded subsets written once beside the output and kept (recorded below)
    dev_specs = selection_sets(mcfg, ecfg, tasks, out_root.parent / f".{out_root.name}-dev")
    template = adapters[names[0]]
    # mergekit merges full models: each expert with its LoRA folded in, and the base. They are scratch, kept
    # beside the DVC output and deleted at the end: four fp32 copies of the backbone would otherwise be
    # cached by DVC twice over (2.6 GB at 135M parameters in fp32; Phi-4-mini in bf16, the paper profile: 40 GB).
    inputs = out_root.parent / f".{out_root.name}-inputs"
    full_models: dict[Path, Path] = {}

    def full_model(n: str, adapter: Path) -> Path:  # an expert's variant for one method: its own folder
        if adapter not in full_models:
            folder = inputs / (n if adapter == adapters[n] else f"{n}-{adapter.parent.name}")
            full_models[adapter] = save_full_model(adapter, folder, template, mcfg.dtype)
        return full_models[adapter]

    base = save_full_model(base_path(template), inputs / "base", template, mcfg.dtype)
    default = tuple(adapters[n] for n in names)
    mergers = {default: DeltaMerger(list(default), ecfg.dtype)}
    # every candidate and final merge shares the experts' frozen bottom layers: computed once (stm/core/prefix.py)
    prefix = prefix_cache(ecfg, mergers[default].frozen_layers)

    def score_retriever(model, label: str) -> tuple[float, Evaluation]:
        r = evaluate(Encoder(model, label, ecfg.batch_size, prefix=prefix), dev_specs, "dev")
        return dev_score(r, mcfg.search.ndcg_weight), r

    report = MergeReport(experts=names, search=dump(mcfg.search), methods={},
                         dev_tasks={t.name: sample_record(t) for t in dev_specs})
    for method in mcfg.methods:
        m = get_method(method)
        own = method_adapters.get(method, adapters)
        adapter_dirs = [own[n] for n in names]
        full = {n: full_model(n, own[n]) for n in names}
        if tuple(adapter_dirs) not in mergers:
            mergers[tuple(adapter_dirs)] = DeltaMerger(adapter_dirs, ecfg.dtype)
        merger = mergers[tuple(adapter_dirs)]

        def score(c: Candidate, method=method, m=m) -> float:
            if m.in_memory:
                s, _ = score_retriever(merger.merge(m, c.weights, c.densities), f"{method}-candidate")
            else:
                cfg = mergekit_config(method, list(full.values()), c.weights, base, c.densities, mcfg.dtype)
                tmp = inputs / f"candidate-{method}"
                run_mergekit(cfg, tmp, mcfg.search.seed)
                s, _ = score_retriever(merged_retriever(template, tmp, ecfg.dtype), f"{method}-candidate")
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("%s %s -> %.4f", method, c.as_dict(), s)
            return s

        budget = mcfg.budgets.get(method, mcfg.search.budget)
        # beside the DVC output, not inside it: DVC deletes a stage's outputs before rerunning it
        cache = ScoreCache(out_root.parent / f".{out_root.name}-search" / f"{method}.jsonl",
                           search_fingerprint(method, adapter_dirs, dev_specs, mcfg, ecfg))
        history = search(mcfg.search.strategy, score, len(names), mcfg.search.model_copy(update={"budget": budget}),
                         m.uses_density, cache)
        chosen = best(history)
        final = out_root / method
        cfg = mergekit_config(method, list(full.values()), chosen["weights"], base, chosen["densities"], mcfg.dtype)
        scratch = inputs / f"final-{method}"
        run_mergekit(cfg, scratch, mcfg.search.seed)
        with atomic_path(final) as tmp:
            R.save(merged_retriever(template, scratch, "float32"), tmp, ecfg.dtype)  # loads as it is scored
        # scored as a user loads it: plain SentenceTransformer(path)
        test = evaluate_model(final, ecfg, f"stm-{method}", tasks, "test",
                              extra={"merge": {"method": method, **chosen, "experts": names}}, prefix=prefix)
        entry = {"history": history, "chosen": chosen, "dev_score": chosen["score"], "test": test,
                 **({"variants": mcfg.variants[method]} if method in mcfg.variants else {}),
                 "mergekit_config": portable(cfg),
                 # from the score cache: a resumed search still reports what scoring a candidate costs
                 "seconds_per_candidate": round(sum(cache.seconds.values()) / len(cache.seconds), 2)
                 if cache.seconds else None,
                 "candidates_reused": cache.reused}
        if m.in_memory:  # the merge we searched in memory is the merge mergekit built
            probe = ["a probe sentence about heart disease in mice"]
            mem = DeltaMerger(adapter_dirs, "float32").merge(m, chosen["weights"], chosen["densities"])
            entry["inmemory_vs_mergekit_max_abs_diff"] = float(
                (R.encode(R.load(final, "float32"), probe, R.DOCUMENT) - R.encode(mem, probe, R.DOCUMENT)).abs().max())
        weights = ", ".join(f"{e} {w}" + (f" (density {d})" if d is not None else "") for e, w, d in
                            zip(names, chosen["weights"], chosen["densities"] or [None] * len(names), strict=True))
        (final / "README.md").write_text(model_card(
            f"STM merged retriever ({method})", test,
            [f"**Merge**: mergekit 0.1.5 `{get_method(method).mergekit_name}` of the LoRA experts: {weights}",
             f"**Weights chosen on dev**: `{mcfg.search.strategy}` search, {len(history)} candidates, dev score "
             f"{chosen['score']:.4f} (w nDCG@10 + (1 - w) Recall@10, w = {mcfg.search.ndcg_weight})"]))
        shutil.rmtree(scratch, ignore_errors=True)
        report.methods[method] = MethodResult.model_validate(entry)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    report.save(results)
    shutil.rmtree(inputs, ignore_errors=True)
    return report
