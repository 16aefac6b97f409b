"""Tiny random decoders and a tokenizer built in the test process: no downloads, no assets."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a of and in to is was with for on by patients cells protein gene disease treatment study results "
    "virus covid vaccine cancer tumor heart blood brain drug dose risk clinical trial mice rats infection "
    "immune response expression levels increased decreased associated significant analysis model data method "
    "query passage represent retrieve given question abstract title keyword claim document relevant biomedical"
).split()


def make_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<bos>", "<eos>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(WORDS)) + [".", ",", ":", "?"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>")
    fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, arch: str = "llama", seed: int = 0, layers: int = 2) -> Path:
    """Save a ``layers``-layer (2), hidden-32 random decoder of the given architecture (llama, qwen3, gemma3, phi3)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    tok = make_tokenizer(folder)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    extra = {"qwen3": dict(head_dim=8), "gemma3_text": dict(head_dim=8, sliding_window=16, query_pre_attn_scalar=8),
             "llama": {}, "phi3": {}}
    model_type = {"gemma3": "gemma3_text"}.get(arch, arch)
    config = AutoConfig.for_model(model_type, **common, **extra.get(model_type, {}))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


TEXTS = [
    "the patients with covid vaccine response",
    "cancer cells protein expression increased",
    "heart disease risk in clinical trial",
    "mice infection immune response analysis",
    "drug dose levels decreased in rats",
    "brain tumor gene expression study",
]
