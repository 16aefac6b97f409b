"""The libraries' own parts against ours, on the committed run: mteb's encoder wrappers against ``Encoder``, and
peft's ``add_weighted_adapter(combination_type="cat")`` against ``DeltaMerger`` for in-memory Linear merges.

Usage: python benchmarks/library_parts.py   (on a checkout with the run's experts: `dvc repro train`)

1. Encoders. The Search expert scored on the embedded test tasks by
   - ``Encoder`` (ours): the model's own prompts (a task's instruction on queries, the document prompt on passages),
     embeddings shared across tasks by text, and the frozen-prefix cache (cold: a new cache folder; warm: the
     second model of a run, the case of every expert, merge candidate and final merge after the backbone);
   - mteb's ``SentenceTransformerEncoderWrapper`` given the model's prompts as they are (mteb's lookup order picks
     a task's prompt for its passages too), and given them keyed the way mteb reads them (``<task>-query``,
     ``document``);
   - the same wrapped in ``CachedEmbeddingWrapper`` (cold, then warm: the same model again).
   Each row gives seconds and the average nDCG@10.
2. Linear merges. For the committed Linear weights, one candidate built and its dev corpus embedded by
   ``DeltaMerger`` (the LoRA-touched weights rebuilt) and by peft's ``cat`` adapter (the experts loaded as named
   adapters of one ``PeftModel``, the weighted concatenation added and set active): seconds to build, seconds to
   embed, and the largest embedding difference.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from common import save
from stm import config
from stm.core import retriever as R
from stm.core.evaluation import Encoder, evaluate, task_specs
from stm.core.prefix import PrefixCache
from stm.core.records import MergeReport
from stm.core.tasks import read_task
from stm.io import environment_record
from stm.merging.inmemory import DeltaMerger
from stm.merging.methods import get_method
from stm.merging.run import base_path
from stm.merging.stage import expert_adapters
from stm.paths import setup_environment


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 2)


def encoders(run, ecfg, tmp: Path) -> list[dict]:
    from mteb.models.cache_wrappers import CachedEmbeddingWrapper
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    specs = task_specs(ecfg, run.paths.tasks, "test")
    adapter = run.paths.expert_dir("search") / "adapter"
    rows = []

    def score(name, make):
        result, s = _timed(lambda: evaluate(make(), specs, "test"))
        rows.append({"encoder": name, "seconds": s, "avg_ndcg_at_10": result.average})
        print(rows[-1], flush=True)

    score("ours, no prefix cache", lambda: Encoder(R.load(adapter, ecfg.dtype), "search", ecfg.batch_size))
    prefix = PrefixCache(None, tmp / "prefix")
    score("ours, prefix cache cold", lambda: Encoder(R.load(adapter, ecfg.dtype), "search", ecfg.batch_size,
                                                     prefix=prefix))
    score("ours, prefix cache warm", lambda: Encoder(R.load(adapter, ecfg.dtype), "search", ecfg.batch_size,
                                                     prefix=prefix))
    score("mteb wrapper, the model's prompts", lambda: SentenceTransformerEncoderWrapper(R.load(adapter, ecfg.dtype)))

    def keyed():
        model = R.load(adapter, ecfg.dtype)
        prompts = {f"{s.name}-query": R.prompt_for(model, s.instruction) for s in specs}
        return SentenceTransformerEncoderWrapper(model, model_prompts=prompts | {"document": model.prompts["document"]})

    score("mteb wrapper, prompts keyed <task>-query / document", keyed)
    wrapped = CachedEmbeddingWrapper(keyed(), tmp / "mteb-cache")
    score("mteb CachedEmbeddingWrapper, cold", lambda: wrapped)
    score("mteb CachedEmbeddingWrapper, warm (same model)", lambda: wrapped)
    return rows


def linear_merge(run, mcfg, ecfg) -> dict:
    from peft import PeftModel
    from transformers import AutoModel

    adapters = expert_adapters(run.paths, mcfg)
    names = list(adapters)
    weights = MergeReport.load(run.paths.merging_record).methods["linear"].chosen.weights
    coefficients = [w / sum(weights) for w in weights]  # mergekit's normalized linear merge
    corpus = sorted({t for s in task_specs(ecfg, run.paths.tasks, "dev") for t in read_task(s).corpus.values()})
    out = {"experts": names, "weights": weights, "texts": len(corpus)}

    merger = DeltaMerger(list(adapters.values()), "float32")
    ours, out["delta_merger_build_s"] = _timed(lambda: merger.merge(get_method("linear"), weights))
    a, out["delta_merger_embed_s"] = _timed(lambda: R.encode(ours, corpus, R.DOCUMENT, batch_size=ecfg.batch_size))

    model = R.load(adapters[names[0]], "float32")
    base = AutoModel.from_pretrained(base_path(adapters[names[0]]), dtype=torch.float32, attn_implementation="sdpa")

    def build():
        peft = PeftModel.from_pretrained(base, str(adapters[names[0]]), adapter_name=names[0])
        for n in names[1:]:
            peft.load_adapter(str(adapters[n]), adapter_name=n)
        peft.add_weighted_adapter(names, coefficients, "candidate", combination_type="cat")
        peft.set_adapter("candidate")
        return R.with_decoder(model, peft.eval())

    theirs, out["peft_cat_build_s"] = _timed(build)
    b, out["peft_cat_embed_s"] = _timed(lambda: R.encode(theirs, corpus, R.DOCUMENT, batch_size=ecfg.batch_size))
    out["max_abs_diff"] = float((a - b).abs().max())
    print(out, flush=True)
    return out


def main():
    setup_environment()
    torch.manual_seed(0)
    run = config.Run.of()
    mcfg, ecfg = run.load("merging"), run.load("evaluation")
    with tempfile.TemporaryDirectory() as tmp:
        rows = encoders(run, ecfg, Path(tmp))
    merge = linear_merge(run, mcfg, ecfg)
    save("library_parts", {"run": [run.profile, run.backbone], "encoders": rows, "linear_merge": merge,
                           "environment": environment_record()})


if __name__ == "__main__":
    main()
