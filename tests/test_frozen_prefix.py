"""The frozen-prefix cache (stm/core/prefix.py) changes no number: with LoRA on the top layers only, every model of a
run starts at the cached input of its lowest adapted layer, and embeds exactly as without the cache."""

import pytest
import torch
from sentence_transformers import SentenceTransformer

from stm.core import retriever as R
from stm.core.prefix import PrefixCache, decoder_stack
from stm.merging.inmemory import DeltaMerger
from stm.merging.methods import get_method, mergekit_config, run_mergekit
from stm.merging.run import base_path, merged_retriever, save_full_model
from stm.training.train import train
from test_training import tiny_cfg
from tiny import TEXTS, make_model

QUERIES = ["covid vaccine response", "heart disease risk", "tumor gene expression", "brain drug dose"]


@pytest.fixture(scope="module")
def top_experts(tmp_path_factory):
    """Two tiny experts with LoRA on the top 2 of 4 layers, the base and their full-model folders."""
    from conftest import make_triples
    from stm.io import write_jsonl

    root = tmp_path_factory.mktemp("prefix")
    backbone = make_model(root / "backbone", "llama", layers=4)
    processed = root / "processed"
    adapters = []
    for k, split in enumerate(("med_real", "search")):
        write_jsonl(processed / "splits" / f"{split}.jsonl", make_triples(16, split, seed=k + 20))
        cfg = tiny_cfg(backbone, max_steps=4, seed=k, lora={"r": 4, "alpha": 8, "layers": 2})
        train(cfg, split, root / split, processed)
        adapters.append(root / split / "adapter")
    full = [save_full_model(a, root / "full" / a.parent.name, adapters[0]) for a in adapters]
    base = save_full_model(base_path(adapters[0]), root / "full" / "base", adapters[0])
    return backbone, adapters, full, base, root


def _both(model, cache: PrefixCache, kind=R.DOCUMENT, texts=TEXTS):
    """Embeddings without the cache, then through it (filled by an earlier model of the run)."""
    plain = R.encode(model, texts, kind, batch_size=4)
    with cache.attached(model):
        cached = R.encode(model, texts, kind, batch_size=4)
    return plain, cached


def test_lora_on_the_top_layers_leaves_the_bottom_untouched(top_experts):
    _, adapters, *_ = top_experts
    model = R.load(adapters[0], "float32")
    stack = decoder_stack(R.transformer(model).model)
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapted = [i for i, layer in enumerate(stack.layers) if any(isinstance(m, BaseTunerLayer) for m in layer.modules())]
    assert adapted == [2, 3]


def test_frozen_prefix_cached_embeddings_equal_the_full_forward_for_an_expert(top_experts):
    backbone, adapters, *_ = top_experts
    cache = PrefixCache(layers=2)
    base = R.build(str(backbone), tiny_cfg(backbone).format)  # the experts' format: the same token batches
    with cache.attached(base):  # the backbone's evaluation fills the cache
        R.encode(base, TEXTS, R.DOCUMENT, batch_size=4)
    assert cache.misses == 2 and cache.hits == 0
    for adapter in adapters:
        expert = R.load(adapter, "float32")
        for kind, texts in ((R.DOCUMENT, TEXTS), (R.QUERY, QUERIES)):
            plain, cached = _both(expert, cache, kind, texts)
            assert torch.equal(plain, cached)
    assert cache.hits >= 2 * len(adapters)  # the passages came from the backbone's entries
    # and the shipped folder, loaded as a user would, embeds the same numbers without any cache
    user = SentenceTransformer(str(adapters[0]), device="cpu")
    with cache.attached(R.load(adapters[0], "float32")):
        cached = R.encode(R.load(adapters[0], "float32"), TEXTS, R.DOCUMENT, batch_size=4)
    assert torch.equal(R.encode(user, TEXTS, R.DOCUMENT, batch_size=4), cached)


@pytest.mark.parametrize("method,weights,densities", [("linear", [0.3, 0.9], None), ("ties", [0.6, 0.8], [0.5, 0.7])])
def test_frozen_prefix_cached_embeddings_equal_the_full_forward_for_a_merge(top_experts, method, weights, densities):
    _, adapters, full, base, root = top_experts
    merger = DeltaMerger(adapters, "float32")
    assert merger.frozen_layers == 2
    cache = PrefixCache(layers=merger.frozen_layers)
    m = get_method(method)
    first = merger.merge(m, weights, densities)
    _both(first, cache)  # fills
    other = merger.merge(m, [w / 2 for w in weights], densities)
    plain, cached = _both(other, cache)
    assert cache.hits >= 1 and torch.equal(plain, cached)
    # mergekit's TIES of the same candidate leaves the frozen layers equal to the base, bit for bit (zero task
    # vectors); its Linear merge is a normalized mean of equal tensors, equal only to float rounding, so the cache
    # misses and the full forward runs: still the same numbers
    out = run_mergekit(mergekit_config(method, full, weights, base, densities), root / f"mk-{method}")
    merged = merged_retriever(adapters[0], out, "float32")
    base_stack = decoder_stack(SentenceTransformer(str(adapters[0]), device="cpu")[0].model)
    merged_stack = decoder_stack(R.transformer(merged).model)
    frozen = [(a, b) for i in range(2) for a, b in zip(base_stack.layers[i].state_dict().values(),
                                                       merged_stack.layers[i].state_dict().values())]
    frozen.append((base_stack.embed_tokens.weight, merged_stack.embed_tokens.weight))
    if method == "ties":
        assert all(torch.equal(a, b) for a, b in frozen)
    assert max(float((a - b).detach().abs().max()) for a, b in frozen) < 1e-6
    hits = cache.hits
    plain, cached = _both(merged, cache)
    assert torch.equal(plain, cached) and (cache.hits > hits) == (method == "ties")
    # and the in-memory merge that was scored equals mergekit's

    mem = R.encode(merger.merge(m, weights, densities), TEXTS, R.DOCUMENT, batch_size=4)
    assert (mem - plain).abs().max() < 1e-5


def test_a_model_whose_prefix_differs_misses_the_cache(top_experts):
    backbone, adapters, *_ = top_experts
    cache = PrefixCache(layers=2)
    expert = R.load(adapters[0], "float32")
    _both(expert, cache)
    hits = cache.hits
    stack = decoder_stack(R.transformer(expert).model)
    with torch.no_grad():
        stack.layers[0].mlp.down_proj.weight[0, 0] += 1e-3  # one weight of a frozen layer
    plain, cached = _both(expert, cache)
    assert cache.hits == hits and torch.equal(plain, cached)


def test_the_prefix_cache_persists_on_disk_for_the_next_stage(top_experts, tmp_path):
    _, adapters, *_ = top_experts
    first = PrefixCache(layers=2, folder=tmp_path / "prefix")
    _both(R.load(adapters[0], "float32"), first)
    assert list((tmp_path / "prefix").rglob("*.pt"))
    second = PrefixCache(layers=2, folder=tmp_path / "prefix")  # a new process of the same run
    plain, cached = _both(R.load(adapters[1], "float32"), second)
    assert second.hits >= 1 and second.misses == 0 and torch.equal(plain, cached)
