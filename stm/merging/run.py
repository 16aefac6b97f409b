"""The merging stage: search weights on dev tasks, build the chosen merges with MergeKit, evaluate on test."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from stm import paths
from stm.config import EvaluationConfig, MergingConfig, dump
from stm.evaluation.encoders import DecoderEncoder
from stm.evaluation.harness import evaluate
from stm.evaluation.run import dev_score, task_specs
from stm.io import atomic_path, read_json, sha256_file, sha256_text, write_json
from stm.merging.inmemory import DeltaMerger, coefficients
from stm.merging.methods import get_method, mergekit_config, run_mergekit
from stm.merging.search import Candidate, ScoreCache, best, search
from stm.training.export import export_sentence_transformers, load_retriever
from stm.training.model import DTYPES, load_backbone

log = logging.getLogger(__name__)


def _source_key(source: Path | str, record: dict, dtype: str) -> str:
    """What a full-model folder was built from: the adapter's bytes, or the backbone's name and attention."""
    if Path(source, "adapter_config.json").exists():
        parts = [sha256_file(Path(source, f)) for f in ("adapter_model.safetensors", "stm_retriever.json")]
    else:
        parts = [str(source), record.get("bidirectional", False)]
    return sha256_text(json.dumps([*parts, dtype]))


def save_full_model(source: Path | str, out: Path, record: dict, dtype: str = "float32") -> Path:
    """An adapter merged into its base (``merge_and_unload``), or the bare base, as a plain HF folder.

    The LoRA is folded in at float32 and the result saved in ``dtype``, the merge's own dtype: mergekit casts its
    inputs to that dtype anyway, so a bfloat16 merge gets the same numbers from half the disk.
    A folder left by an interrupted run is reused only if it was built from the same source and dtype."""
    key = _source_key(source, record, dtype)
    done = out / "stm_retriever.json"
    if done.exists() and read_json(done).get("source_key") == key:
        return out
    shutil.rmtree(out, ignore_errors=True)
    if Path(source, "adapter_config.json").exists():
        retriever, _ = load_retriever(source, dtype="float32")
        model, tok = retriever.model, retriever.tokenizer
    else:
        model, tok = load_backbone(str(source), "float32", record.get("bidirectional", False))
    model = model.to(DTYPES[dtype])
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "stm_retriever.json", record | {"source_key": key})
    return out


def portable(cfg: dict) -> dict:
    """A mergekit config as recorded in results: paths relative to the repository, not to this machine."""
    root = f"{paths.ROOT}/"
    return json.loads(json.dumps(cfg).replace(json.dumps(root)[1:-1], ""))


def model_card(method: str, experts: list[str], chosen: dict, dev: float, test: dict, strategy: str) -> str:
    rows = "\n".join(f"| {e} | {w} | {d} |" for e, w, d in
                     zip(experts, chosen["weights"], chosen.get("densities") or ["-"] * len(experts), strict=True))
    scores = "\n".join(f"| {t} | {s['ndcg_at_10']:.4f} |" for t, s in test["scores"].items())
    return (f"# STM merged retriever ({method})\n\nMerged with mergekit 0.1.5 from LoRA experts, weights chosen by "
            f"`{strategy}` search on dev tasks (dev score {dev:.4f}).\n\n| expert | weight | density |\n|---|---|---|\n"
            f"{rows}\n\nTest nDCG@10:\n\n| task | nDCG@10 |\n|---|---|\n{scores}\n\n"
            "Load with `SentenceTransformer(path)`; pooling, prompts, EOS and left padding are kept.\n")


def search_fingerprint(method: str, adapter_dirs: list[Path], dev_specs, mcfg: MergingConfig,
                       ecfg: EvaluationConfig) -> str:
    """What a candidate's dev score depends on: expert weights, dev data, dtypes, metric weighting."""
    parts = {"method": method, "experts": [[sha256_file(d / f) for f in ("adapter_model.safetensors", "stm_retriever.json")]
                                           for d in adapter_dirs],
             "dev": [t.record() for t in dev_specs], "eval_dtype": ecfg.dtype, "batch_size": ecfg.batch_size,
             "merge_dtype": mcfg.dtype, "ndcg_weight": mcfg.search.ndcg_weight}
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:24]


def run(mcfg: MergingConfig, ecfg: EvaluationConfig, adapters: dict[str, Path], out_root: Path | None = None,
        results: Path | None = None) -> dict:
    out_root = Path(out_root or paths.MERGED)
    names = list(adapters)
    adapter_dirs = [adapters[n] for n in names]
    record = read_json(adapter_dirs[0] / "stm_retriever.json")
    from stm.evaluation.tasks import resolve

    dev_specs = [resolve(t, "dev") for t in (mcfg.dev_tasks or ecfg.tasks)]
    test_specs = task_specs(ecfg, "test")
    # mergekit merges full models: each expert with its LoRA folded in, and the base. They are scratch, kept
    # beside the DVC output and deleted at the end: four fp32 copies of the backbone would otherwise be
    # cached by DVC twice over (2.6 GB at 135M parameters in fp32; Phi-4-mini in bf16, the paper profile: 40 GB).
    inputs = out_root.parent / f".{out_root.name}-inputs"
    full = {n: save_full_model(adapters[n], inputs / n, record | {"expert": n}, mcfg.dtype) for n in names}
    base = save_full_model(record["backbone_path"], inputs / "base", record | {"expert": "base"}, mcfg.dtype)
    merger = DeltaMerger(adapter_dirs, ecfg.dtype)

    def score_retriever(retriever, label: str) -> tuple[float, dict]:
        enc = DecoderEncoder(retriever, label, {}, ecfg.batch_size)
        r = evaluate(enc, dev_specs, "dev")
        return dev_score(r, mcfg.search.ndcg_weight), r

    report: dict = {"experts": names, "search": dump(mcfg.search), "methods": {}}
    for method in mcfg.methods:
        m = get_method(method)

        def score(c: Candidate, method=method, m=m) -> float:
            if m.in_memory:
                s, _ = score_retriever(merger.apply(coefficients(method, c.weights)), f"{method}-candidate")
            else:
                cfg = mergekit_config(method, list(full.values()), c.weights, base, c.densities, mcfg.dtype)
                tmp = out_root / f".candidate-{method}"
                run_mergekit(cfg, tmp)
                shutil.copy(base / "stm_retriever.json", tmp / "stm_retriever.json")
                retriever, _ = load_retriever(tmp, dtype=ecfg.dtype)
                s, _ = score_retriever(retriever, f"{method}-candidate")
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
        run_mergekit(cfg, final)
        write_json(final / "stm_retriever.json", record | {"merge": {"method": method, **chosen, "experts": names}})
        retriever, rec = load_retriever(final, dtype=ecfg.dtype)
        test = evaluate(DecoderEncoder(retriever, f"stm-{method}", rec, ecfg.batch_size), test_specs, "test",
                        rec | {"name": f"stm-{method}"})
        entry = {"history": history, "chosen": chosen, "dev_score": chosen["score"], "test": test,
                 "mergekit_config": portable(cfg),
                 # from the score cache: a resumed search still reports what scoring a candidate costs
                 "seconds_per_candidate": round(sum(cache.seconds.values()) / len(cache.seconds), 2)
                 if cache.seconds else None,
                 "candidates_reused": cache.reused}
        if m.in_memory:  # the merge we searched in memory is the merge mergekit built
            probe = ["Represent this passage\npassage: a probe sentence about heart disease in mice"]
            ret32, _ = load_retriever(final, dtype="float32")
            mem = DeltaMerger(adapter_dirs, "float32").apply(coefficients(method, chosen["weights"]))
            entry["inmemory_vs_mergekit_max_abs_diff"] = float(
                (ret32.encode(probe, 64) - mem.encode(probe, 64)).abs().max())
        export_sentence_transformers(
            retriever, out_root / f"{method}-sentence-transformers", rec,
            {t.name: t.instruction for t in test_specs},
            model_card(method, names, chosen, chosen["score"], test, mcfg.search.strategy))
        report["methods"][method] = entry
        del retriever
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    write_json(results or paths.RESULTS / "merging.json", report)
    shutil.rmtree(inputs, ignore_errors=True)
    return report
