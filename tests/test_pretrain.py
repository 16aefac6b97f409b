"""The pre-training ablation (Figure 3): inverse-cloze pairs, and fine-tuning that starts from an adapter."""

import json

import torch

from stm.data.pretrain import ict_pairs
from stm.data.schema import read_triples
from stm.io import write_jsonl
from stm.training.train import train
from test_training import _adapter_tensors, tiny_cfg

ABSTRACT = ("Aspirin reduced platelet aggregation in all twelve patients. Bleeding time increased after two doses. "
            "No serious adverse events were observed during follow-up. Larger trials are needed to confirm this.")


def test_ict_pairs_hold_out_one_sentence_and_are_seeded(tmp_path):
    rows = [{"id": f"r{i}", "split": "nlu", "instruction": "x", "query": "q", "positive": p, "negative": "n",
             "pos_id": f"p{i}"} for i, p in enumerate([ABSTRACT, ABSTRACT, "Too short. Two sentences only here."])]
    f = tmp_path / "nlu.jsonl"
    write_jsonl(f, rows)
    pairs = ict_pairs([f], seed=1)
    assert len(pairs) == 2                                 # the two-sentence abstract has no context left
    for p in pairs:
        assert p["query"] in ABSTRACT and p["query"] not in p["positive"]
        assert len(p["positive"].split()) + len(p["query"].split()) == len(ABSTRACT.split())
    assert pairs == ict_pairs([f], seed=1)
    assert {p["query"] for s in range(8) for p in ict_pairs([f], seed=s)} != {pairs[0]["query"]}
    write_jsonl(tmp_path / "ict.jsonl", pairs)
    assert len(read_triples(tmp_path / "ict.jsonl")) == 2  # a valid triple file for training


def test_train_file_and_init_adapter(tiny_model, processed, tmp_path):
    rows = read_triples(processed / "splits" / "nlu.jsonl")
    write_jsonl(tmp_path / "ict.jsonl", [r | {"split": "pretrain", "negative": "unused"} for r in rows])
    rec = train(tiny_cfg(tiny_model, train_file=str(tmp_path / "ict.jsonl"), use_hard_negatives=False),
                "pretrain", tmp_path / "pt", processed)
    assert list(rec.data["files"]) == ["ict.jsonl"]  # named from the folder that holds the profile's data
    # starting from PT's adapter with a vanishing learning rate keeps PT's weights
    train(tiny_cfg(tiny_model, init_adapter=str(tmp_path / "pt" / "adapter"), learning_rate=1e-12),
          "nlu", tmp_path / "ptft", processed)
    a, b = _adapter_tensors(tmp_path / "pt"), _adapter_tensors(tmp_path / "ptft")
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)   # PT moved away from LoRA's zero init
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    cfg = json.loads((tmp_path / "ptft" / "train_record.json").read_text())["config"]
    assert cfg["init_adapter"].endswith("pt/adapter")
