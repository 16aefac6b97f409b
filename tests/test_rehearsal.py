"""The rehearsal's stand-ins: the paper's three architectures with their real tokenizer classes, built offline."""

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoTokenizer

from stm import config
from stm.core import retriever as R
from stm.rehearsal.standins import STANDINS, build_model

REAL = {  # what the real hub checkpoints declare (config.json model_type, tokenizer_config.json tokenizer_class)
    "qwen3-0.6b": ("qwen3", "Qwen2Tokenizer", "<|im_end|>"),
    "gemma-2b": ("gemma", "GemmaTokenizer", "<eos>"),
    "phi4-mini": ("phi3", "GPT2Tokenizer", "<|endoftext|>"),
}


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    return {name: build_model(name, root / name) for name in STANDINS}


@pytest.mark.parametrize("name", sorted(REAL))
def test_a_stand_in_has_the_paper_architecture_and_tokenizer_class(standins, name):
    folder = standins[name]
    model_type, tokenizer_class, eos = REAL[name]
    assert AutoConfig.from_pretrained(folder).model_type == model_type
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == tokenizer_class
    tok = AutoTokenizer.from_pretrained(folder)
    text = "Given a web search query, retrieve relevant passages\nQuery: what lowers cholesterol? Ünïcode"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text  # byte-level or byte fallback
    assert tok.eos_token == eos


@pytest.mark.parametrize("name", sorted(REAL))
def test_the_paper_format_embeds_a_stand_in_as_its_saved_folder_does(standins, name, tmp_path):
    """Last-token pooling, bidirectional attention, EOS appended, left padding; no chat template applied."""
    fmt = config.load("training", profile="paper").format.model_copy(update={"max_query_tokens": 32,
                                                                            "max_passage_tokens": 48})
    model = R.build(str(standins[name]), fmt, bidirectional=True, instructions={"t": "Given a claim"})
    feats = R.features(model, ["what lowers cholesterol", "statins"], R.QUERY, model.prompts["t"])
    tok = R.transformer(model).tokenizer
    ids = feats["input_ids"]
    assert (ids[:, -1] == tok.eos_token_id).all() and "<|im_start|>" not in tok.decode(ids[0])
    assert (feats["attention_mask"][1, 0] == 0) and (feats["attention_mask"][:, -1] == 1).all()  # left padding
    ref = R.encode(model, ["what lowers cholesterol"], R.QUERY, model.prompts["t"])
    loaded = SentenceTransformer(str(R.save(model, tmp_path / name)), device="cpu")
    torch.testing.assert_close(loaded.encode_query(["what lowers cholesterol"], prompt_name="t", convert_to_tensor=True),
                               ref, atol=1e-5, rtol=1e-4)
