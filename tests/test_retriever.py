"""The one retriever object: a SentenceTransformer built from a decoder, on tiny random models and the real tokenizer."""

import json
import shutil

import pytest
import torch
from sentence_transformers import SentenceTransformer

from stm.config import FormatConfig, LoraSettings
from stm.core import retriever as R
from tiny import make_model

FMT = FormatConfig(pooling="mean", include_prompt=False, query_template="{instruction}\nQuery:\n{query}",
                   passage_template="Represent this passage\npassage:\n{passage}", max_query_tokens=16,
                   max_passage_tokens=24)
LONG_QUERY = " ".join(["patients with covid vaccine response in clinical trial"] * 6)  # > 16 query tokens


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3", "phi3"])
def test_bidirectional_switch_controls_future_token_influence(tmp_path, arch):
    folder = make_model(tmp_path / arch, arch)
    for bidirectional in (False, True):
        model = R.build(str(folder), FormatConfig(), bidirectional=bidirectional)
        decoder, tok = R.transformer(model).model, R.tokenizer(model)
        batch = tok(["the patients with covid vaccine response"], return_tensors="pt")
        changed = batch["input_ids"].clone()
        changed[0, -2] = tok.convert_tokens_to_ids("cancer")  # a later token (before the EOS)
        with torch.no_grad():
            h1 = decoder(**batch).last_hidden_state
            h2 = decoder(input_ids=changed, attention_mask=batch["attention_mask"]).last_hidden_state
        first_changed = not torch.allclose(h1[0, 0], h2[0, 0], atol=1e-6)
        assert first_changed == bidirectional, f"{arch}: bidirectional={bidirectional}"
        assert R.describe(model)["bidirectional"] == bidirectional


def test_tokenizer_appends_eos_even_when_truncating_and_pads_left(tiny_model):
    model = R.build(str(tiny_model), FMT)
    feats = R.features(model, [LONG_QUERY, "heart"], R.QUERY, "Find it\nQuery:\n")
    assert feats["input_ids"].shape[1] == FMT.max_query_tokens  # the query limit, not the passage one
    assert (feats["input_ids"][:, -1] == R.tokenizer(model).eos_token_id).all()
    assert feats["attention_mask"][1, 0] == 0  # the short text is padded on the left
    assert feats["prompt_length"] > 0
    docs = R.features(model, [LONG_QUERY * 2], R.DOCUMENT)
    assert docs["input_ids"].shape[1] == FMT.max_passage_tokens


def test_prompt_aware_mean_pooling_leaves_out_exactly_the_instruction(tiny_model):
    """With include_prompt false the embedding is the mean over the query's own tokens (and EOS), by hand."""
    model = R.build(str(tiny_model), FMT)
    prompt = R.query_prompt(FMT, "retrieve relevant abstract")
    texts = ["covid vaccine", "heart disease risk in mice"]
    emb = R.encode(model, texts, R.QUERY, prompt)
    tok, decoder = R.tokenizer(model), R.transformer(model).model
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    for i, t in enumerate(texts):
        ids = tok(prompt + t, return_tensors="pt")
        with torch.no_grad():
            h = decoder(**ids).last_hidden_state[0]
        torch.testing.assert_close(emb[i], h[n_prompt:].mean(0), atol=1e-5, rtol=1e-4)
    with_prompt = R.build(str(tiny_model), FMT.model_copy(update={"include_prompt": True}))
    assert (R.encode(with_prompt, texts, R.QUERY, prompt) - emb).abs().max() > 1e-3


def test_batch_invariance_under_left_padding(tiny_model, texts):
    model = R.build(str(tiny_model), FormatConfig(pooling="lasttoken"))
    together = R.encode(model, texts, R.DOCUMENT, batch_size=4)
    alone = torch.cat([R.encode(model, [t], R.DOCUMENT) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_prompts_are_saved_with_the_model_and_fill_any_instruction(tiny_model):
    model = R.build(str(tiny_model), FMT, instructions={"pubmed-claims": "Given a claim"}, default_instruction="Find")
    assert model.prompts["pubmed-claims"] == "Given a claim\nQuery:\n"
    assert model.prompts[R.QUERY] == "Find\nQuery:\n"
    assert model.prompts[R.DOCUMENT] == "Represent this passage\npassage:\n"
    assert R.prompt_for(model, "Any {odd} instruction") == "Any {odd} instruction\nQuery:\n"
    assert R.prompt_for(model, "") == "Query:\n"


def test_a_prompt_that_is_not_a_token_prefix_is_refused_for_prompt_aware_pooling(smollm2_dir):
    """BPE merges ': ' + 'word' into ':' 'Ġword': a trailing space would swallow the query's first token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    with pytest.raises(R.PromptError, match="does not tokenize as a prefix"):
        R.check_prompt_prefix(tok, "Find it\nQuery: ", "prompt 'query'")
    R.check_prompt_prefix(tok, "Find it\nQuery:\n", "prompt 'query'")


def _trained_folder(tiny_model, tmp_path, fmt: FormatConfig = FMT):
    model = R.build(str(tiny_model), fmt, instructions={"pubmed-claims": "Given a claim"})
    R.add_lora(model, LoraSettings(r=4, alpha=8), seed=0)
    with torch.no_grad():  # a non-trivial adapter, as if trained
        for name, p in R.transformer(model).model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn_like(p))
    out = R.save(model, tmp_path / "expert")
    return model, out


def test_an_expert_folder_loads_with_plain_sentence_transformers_and_embeds_as_scored(tiny_model, tmp_path, texts):
    model, out = _trained_folder(tiny_model, tmp_path)
    assert (out / "adapter_config.json").exists() and not list(out.glob("stm_*.json"))
    loaded = SentenceTransformer(str(out), device="cpu")
    queries = [LONG_QUERY, *texts[:2]]  # one query longer than the query limit
    prompt = model.prompts["pubmed-claims"]
    ref_q = R.encode(model, queries, R.QUERY, prompt)
    ref_d = R.encode(model, [LONG_QUERY * 2, *texts], R.DOCUMENT)
    torch.testing.assert_close(loaded.encode_query(queries, prompt_name="pubmed-claims", convert_to_tensor=True),
                               ref_q, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loaded.encode_document([LONG_QUERY * 2, *texts], convert_to_tensor=True), ref_d,
                               atol=1e-5, rtol=1e-4)
    # the adapter is really there: the base alone embeds differently
    base = R.build(str(tiny_model), FMT)
    assert (R.encode(base, queries, R.QUERY, prompt) - ref_q).abs().max() > 1e-3
    d = R.describe(R.load(out))
    assert d["adapter"] is True and R.describe(R.merge_lora(R.load(out)))["adapter"] is False
    assert d["pooling"] == "mean" and d["include_prompt"] is False and d["query_length"] == 16
    assert d["document_length"] == 24 and d["padding_side"] == "left" and d["eos_appended"]


def test_a_shipped_folder_loads_in_the_dtype_it_was_scored_in(tiny_model, tmp_path, texts):
    """The run scores in ``evaluation.dtype`` (bf16 on an AMX CPU): the folder records it, so plain
    ``SentenceTransformer(path)`` loads and embeds exactly as the scoring did; a caller's explicit dtype still wins."""
    _, out = _trained_folder(tiny_model, tmp_path)
    assert R.describe(SentenceTransformer(str(out), device="cpu"))["dtype"] == "float32"  # nothing recorded
    R.record_dtype(out, "bfloat16")
    plain = SentenceTransformer(str(out), device="cpu")
    scored = R.load(out, "bfloat16")
    assert R.describe(plain)["dtype"] == "bfloat16" and R.describe(plain)["adapter"] is True
    assert torch.equal(plain.encode_document(texts, convert_to_tensor=True), R.encode(scored, texts, R.DOCUMENT))
    assert not torch.equal(R.encode(R.load(out, "float32"), texts, R.DOCUMENT), R.encode(scored, texts, R.DOCUMENT))
    assert R.describe(R.load(out, "float32"))["dtype"] == "float32"
    full = R.save(R.merge_lora(R.load(out, "float32")), tmp_path / "full", "bfloat16")  # a merge's folder
    assert R.describe(SentenceTransformer(str(full), device="cpu"))["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="int8"):
        R.record_dtype(out, "int8")


def test_merging_the_lora_in_keeps_the_embeddings(tiny_model, tmp_path, texts):
    model, out = _trained_folder(tiny_model, tmp_path)
    ref = R.encode(model, texts, R.DOCUMENT)
    loaded = R.merge_lora(R.load(out))  # an adapter that SentenceTransformer(path) injected
    assert not any("lora" in n for n, _ in R.transformer(loaded).model.named_parameters())
    torch.testing.assert_close(R.encode(loaded, texts, R.DOCUMENT), ref, atol=1e-5, rtol=1e-4)
    R.save(loaded, tmp_path / "full")
    assert not (tmp_path / "full" / "adapter_config.json").exists()
    torch.testing.assert_close(R.encode(R.load(tmp_path / "full"), texts, R.DOCUMENT), ref, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def smollm2_shape(tmp_path_factory, smollm2_dir):
    """Tiny random weights behind the real SmolLM2 tokenizer files, chat template included."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("smollm2-shape")
    src = smollm2_dir
    for f in src.iterdir():
        if f.suffix in (".json", ".jinja") and f.name != "config.json":
            shutil.copy(f, folder / f.name)
    real = json.loads((src / "config.json").read_text())
    config = AutoConfig.for_model("llama", vocab_size=real["vocab_size"], hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  bos_token_id=real.get("bos_token_id"), eos_token_id=real.get("eos_token_id"),
                                  tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    assert (folder / "chat_template.jinja").exists() or "chat_template" in (folder / "tokenizer_config.json").read_text()
    return folder


def test_real_tokenizer_folder_embeds_with_the_token_ids_scoring_used(smollm2_shape, tmp_path):
    """The shipped folder, loaded as a user would, never applies SmolLM2's chat template: same ids, same vectors."""
    model, out = _trained_folder(smollm2_shape, tmp_path)
    loaded = SentenceTransformer(str(out), device="cpu")
    assert "message" not in R.transformer(loaded).modality_config
    queries = ["covid vaccine trial", LONG_QUERY]
    prompt = model.prompts["pubmed-claims"]
    scored = R.features(model, queries, R.QUERY, prompt)
    user = loaded.preprocess(queries, prompt=loaded.prompts["pubmed-claims"], task="query")
    assert torch.equal(scored["input_ids"], user["input_ids"]) and scored["prompt_length"] == user["prompt_length"]
    tok = R.tokenizer(loaded)
    text = tok.decode(user["input_ids"][0], skip_special_tokens=False)
    assert "<|im_start|>" not in text and "helpful AI assistant" not in text and text.endswith(tok.eos_token)
    assert scored["input_ids"].shape[1] == FMT.max_query_tokens
    ref_q = R.encode(model, queries, R.QUERY, prompt)
    torch.testing.assert_close(loaded.encode_query(queries, prompt_name="pubmed-claims", convert_to_tensor=True),
                               ref_q, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loaded.encode(queries, prompt_name="pubmed-claims", task="query",
                                             convert_to_tensor=True), ref_q, atol=1e-5, rtol=1e-4)
    docs = ["Represent the abstract of a trial.", "Heart failure in mice " * 20]
    d_scored = R.features(model, docs, R.DOCUMENT)
    d_user = loaded.preprocess(docs, prompt=loaded.prompts["document"], task="document")
    assert torch.equal(d_scored["input_ids"], d_user["input_ids"])
    torch.testing.assert_close(loaded.encode_document(docs, convert_to_tensor=True), R.encode(model, docs, R.DOCUMENT),
                               atol=1e-5, rtol=1e-4)
