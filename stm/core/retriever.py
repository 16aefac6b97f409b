"""The one retriever object: a decoder LLM as a ``SentenceTransformer``.

Training, evaluation, prompt optimization, merge search and the shipped folders all use the model
that :func:`build` returns: a sentence-transformers ``Transformer`` (the decoder, optionally wrapped
in a PEFT LoRA adapter) followed by ``Pooling``. Everything that moves an embedding lives in that
object and is saved with it by sentence-transformers itself:

* the tokenizer appends EOS (its post-processor, so truncation keeps it) and pads on the left;
* the module is pinned to the plain-text modality, so a tokenizer's chat template is never applied
  (sentence-transformers 6 would otherwise wrap every text in SmolLM2's system prompt);
* pooling is last-token or mean; with ``include_prompt: false`` the instruction's tokens are left out
  of the mean (sentence-transformers' own prompt-aware pooling, left padding included);
* prompts: ``query`` (the default instruction), one per task name, and ``document`` (the passage
  template);
* ``query_length`` / ``document_length``: the query and passage token limits, honoured by
  ``encode_query`` / ``encode_document`` and by :func:`features` (training);
* optional bidirectional attention (the paper's LLM2Vec-style switch).

A folder written by :func:`save` loads with plain ``SentenceTransformer(path)`` and embeds exactly
as it was scored: the tests check token ids and embeddings with the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from tokenizers.processors import TemplateProcessing
from torch import nn
from transformers import AutoModel, PreTrainedTokenizerBase

from stm import paths
from stm.config import FormatConfig, LoraSettings
from stm.core.prefix import decoder_stack
from stm.io import read_json

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TEXT_ONLY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
QUERY, DOCUMENT = "query", "document"
# the query prompt with ``{instruction}`` unfilled, kept among the prompts so that a saved folder can be
# given any task's instruction later (dev sets, a local BEIR folder, a candidate GEPA instruction)
INSTRUCTION_TEMPLATE = "instruction_template"


class PromptError(ValueError):
    """A template whose prompt is not a token prefix of prompt + text, so prompt-aware pooling would be wrong."""


class ModelError(ValueError):
    """A model folder that is not a retriever: no sentence-transformers modules, or no pooling module."""


def check_retriever(path: str | Path) -> None:
    """Refuse what is not a retriever before loading it: sentence-transformers would wrap a bare causal LM in a
    default mean pooling without our prompts and score it without a word, a number that means nothing."""
    folder = Path(path)
    if not folder.exists():
        if folder.is_absolute() or str(path).startswith(".") or folder.suffix or len(folder.parts) != 2:
            raise ModelError(f"{path}: no such model folder")
        return  # org/name: a hub model, checked by the library when it downloads
    modules = folder / "modules.json"
    if not modules.is_file():
        what = "a language model without a pooling module" if (folder / "config.json").is_file() else "not a model"
        raise ModelError(f"{path}: {what} (no modules.json); give a retriever we wrote (an expert's adapter folder or "
                         "a merged model), or score an untrained backbone with `python -m stm backbone`")
    types = [str(m.get("type", "")) for m in read_json(modules)]
    if not any(t.endswith("Pooling") for t in types):
        raise ModelError(f"{modules}: no Pooling module among {types}; not a sentence-transformers retriever")


def ensure_eos(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make the tokenizer append EOS to every text (BOS kept where the model uses one).

    Done in the tokenizer's post-processor rather than by string concatenation, so truncation keeps
    the EOS and a saved folder tokenizes exactly like training.
    """
    if tokenizer.eos_token is None:
        raise ValueError("tokenizer has no EOS token; last-token pooling needs one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = tokenizer("a")["input_ids"]
    if ids and ids[-1] == tokenizer.eos_token_id:
        return tokenizer
    eos, bos = tokenizer.eos_token, tokenizer.bos_token
    uses_bos = bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    special = [(eos, tokenizer.eos_token_id)]
    if uses_bos:
        special.append((bos, tokenizer.bos_token_id))
    prefix = f"{bos} " if uses_bos else ""
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{prefix}$A {eos}", pair=f"{prefix}$A {eos} $B:1 {eos}:1", special_tokens=special
    )
    if tokenizer("a")["input_ids"][-1] != tokenizer.eos_token_id:
        raise RuntimeError(f"could not make {type(tokenizer).__name__} append EOS")
    return tokenizer


def set_bidirectional(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Disable (or restore) the causal mask, as the paper does after LLM2Vec.

    transformers builds a bidirectional mask when ``config.is_causal`` is False (Llama, Qwen, Phi);
    Gemma 3 has its own ``use_bidirectional_attention`` switch. The attention modules' own
    ``is_causal`` flag is what SDPA uses when no mask is passed, so it is flipped too.
    """
    cfg = model.config
    cfg.is_causal = not enabled
    if hasattr(cfg, "use_bidirectional_attention"):
        cfg.use_bidirectional_attention = enabled
    for module in model.modules():
        if hasattr(module, "is_causal") and isinstance(module.is_causal, bool):
            module.is_causal = not enabled
    return model


def fill(template: str, instruction: str) -> str:
    """A query prompt from a prompt template: the instruction in place of ``{instruction}``."""
    text = template.replace("{instruction}", instruction)
    return text.lstrip("\n") if not instruction else text


def query_prompt(fmt: FormatConfig, instruction: str) -> str:
    """The text before a query: the query template up to ``{query}``, with the instruction filled in."""
    return fill(fmt.query_template.split("{query}")[0], instruction)


def prompt_for(model: SentenceTransformer, instruction: str) -> str:
    """The query prompt of ``model`` for an instruction, from the template saved with the model."""
    return fill(model.prompts.get(INSTRUCTION_TEMPLATE, "{instruction}"), instruction)


def document_prompt(fmt: FormatConfig) -> str:
    return fmt.passage_template.split("{passage}")[0]


def check_prompt_prefix(tokenizer: PreTrainedTokenizerBase, prompt: str, what: str) -> None:
    """Prompt-aware pooling drops the prompt's token count from the front: the prompt must tokenize as a prefix."""
    if not prompt:
        return
    alone = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joined = tokenizer(prompt + "heart disease", add_special_tokens=False)["input_ids"]
    if joined[: len(alone)] != alone:
        raise PromptError(
            f"{what} {prompt!r} does not tokenize as a prefix of prompt + text ({type(tokenizer).__name__}); with "
            "format.include_prompt false its last token would swallow the text's first one. End the template's "
            "prefix with a newline (e.g. 'Query:\\n{query}'), or set format.include_prompt true")


def prompts_for(fmt: FormatConfig, instructions: dict[str, str] | None = None, default_instruction: str = "") -> dict:
    """The model's prompts: ``query`` (default instruction), one per task, and ``document``."""
    prompts = {QUERY: query_prompt(fmt, default_instruction), DOCUMENT: document_prompt(fmt),
               INSTRUCTION_TEMPLATE: fmt.query_template.split("{query}")[0]}
    for task, instruction in (instructions or {}).items():
        prompts[task] = query_prompt(fmt, instruction)
    return prompts


def build(backbone: str, fmt: FormatConfig, dtype: str = "float32", bidirectional: bool = False,
          instructions: dict[str, str] | None = None, default_instruction: str = "", revision: str | None = None,
          device: str | torch.device | None = None) -> SentenceTransformer:
    """A retriever from a decoder checkpoint (local folder or hub id), on ``device`` (default: :func:`default_device`)."""
    device = device or default_device()
    transformer = Transformer(
        backbone, max_seq_length=max(fmt.max_query_tokens, fmt.max_passage_tokens),
        query_length=fmt.max_query_tokens, document_length=fmt.max_passage_tokens,
        model_kwargs={"dtype": DTYPES[dtype], "attn_implementation": "sdpa", "revision": revision},
        processor_kwargs={"padding_side": fmt.padding_side, "revision": revision},
        modality_config=TEXT_ONLY, module_output_name="token_embeddings",
    )
    ensure_eos(transformer.tokenizer)
    transformer.tokenizer.padding_side = fmt.padding_side
    if getattr(transformer.model.config, "pad_token_id", None) is None:
        transformer.model.config.pad_token_id = transformer.tokenizer.pad_token_id
    set_bidirectional(transformer.model, bidirectional)
    prompts = prompts_for(fmt, instructions, default_instruction)
    if fmt.pooling == "mean" and not fmt.include_prompt:
        for name, prompt in prompts.items():
            if name != INSTRUCTION_TEMPLATE:
                    check_prompt_prefix(transformer.tokenizer, prompt, f"prompt {name!r}")
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=fmt.pooling,
                      include_prompt=fmt.include_prompt)
    model = SentenceTransformer(modules=[transformer, pooling], prompts=prompts, device=str(device))
    model.eval()
    return model


def default_device() -> str:
    """Where every model that embeds runs unless told otherwise: the (first visible) GPU when there is one, else the
    CPU. Evaluation, merge candidates and GEPA's scoring model all load through :func:`build` / :func:`load`."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(path: str | Path, dtype: str | None = None, device: str | torch.device | None = None) -> SentenceTransformer:
    """A folder written by :func:`save` (an expert's adapter or a merged model), as a user would load it, on
    ``device`` (default: :func:`default_device`)."""
    check_retriever(path)
    device = device or default_device()
    kwargs = {"model_kwargs": {"dtype": DTYPES[dtype]}} if dtype else {}
    model = SentenceTransformer(str(path), device=str(device), **kwargs)
    model.eval()
    return model


def transformer(model: SentenceTransformer) -> Transformer:
    return model[0]


def pooling(model: SentenceTransformer) -> Pooling:
    return model[1]


def tokenizer(model: SentenceTransformer) -> PreTrainedTokenizerBase:
    return transformer(model).tokenizer


def add_lora(model: SentenceTransformer, lora: LoraSettings, seed: int, init_adapter: str | Path | None = None,
             gradient_checkpointing: bool = False) -> SentenceTransformer:
    """Wrap the decoder in a PEFT LoRA adapter, in place.

    sentence-transformers' own ``add_adapter`` goes through transformers' PEFT integration, which asks
    for peft>=0.22; the newest peft on PyPI is 0.21.2, so the decoder is wrapped with ``get_peft_model``
    directly. The folder it saves is the same: ``adapter_config.json`` + ``adapter_model.safetensors``,
    which ``SentenceTransformer(path)`` loads over its base model.
    """
    torch.manual_seed(seed)  # identical LoRA initialisation on every process and every resume
    module = transformer(model)
    targets = lora_targets(module.model, lora)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none")
    module.model = get_peft_model(module.model, config)
    if init_adapter:  # continue from an earlier stage's LoRA weights (pre-training, then fine-tuning)
        set_peft_model_state_dict(module.model, load_file(str(Path(init_adapter) / "adapter_model.safetensors")))
    if gradient_checkpointing:
        module.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora.layers is None:  # with LoRA on the top layers only, the backward must stop below them
            module.model.enable_input_require_grads()
    return model


def frozen_layers(backbone: str | Path, lora: LoraSettings) -> int | None:
    """How many bottom decoder layers of ``backbone`` LoRA leaves alone (``lora.layers``); None: LoRA on every layer."""
    if lora.layers is None:
        return None
    from transformers import AutoConfig

    return max(0, AutoConfig.from_pretrained(str(backbone)).num_hidden_layers - lora.layers)


def lora_targets(decoder: nn.Module, lora: LoraSettings) -> str | list[str]:
    """peft's ``target_modules``: the setting as given, or with ``lora.layers`` the full names of the matching
    linear layers of the top ``layers`` decoder layers. (peft's ``layers_to_transform`` does not match a bare
    decoder such as ``LlamaModel``, whose module names start with ``layers.``; full names match any architecture.)"""
    if lora.layers is None:
        return lora.target_modules
    stack = decoder_stack(decoder)
    n = len(stack.layers)
    if lora.layers > n:
        raise ValueError(f"training.lora.layers: {lora.layers} exceeds the decoder's {n} layers")
    wanted = None if lora.target_modules == "all-linear" else (
        [lora.target_modules] if isinstance(lora.target_modules, str) else list(lora.target_modules))
    prefix = next(name for name, m in decoder.named_modules() if m is stack)
    names = []
    for i in range(n - lora.layers, n):
        for name, m in stack.layers[i].named_modules():
            if isinstance(m, nn.Linear) and (wanted is None or name.rsplit(".", 1)[-1] in wanted):
                names.append(".".join(p for p in (prefix, "layers", str(i), name) if p))
    if not names:
        raise ValueError(f"training.lora: no linear layer of the top {lora.layers} layers matches {lora.target_modules!r}")
    return names


def merge_lora(model: SentenceTransformer) -> SentenceTransformer:
    """Fold a LoRA adapter into the decoder's weights, in place: a ``PeftModel`` (training) through
    ``merge_and_unload``, an adapter that ``SentenceTransformer(path)`` injected through each LoRA layer's merge."""
    module = transformer(model)
    if isinstance(module.model, PeftModel):
        module.model = module.model.merge_and_unload()
        return model
    for name, layer in list(module.model.named_modules()):
        if isinstance(layer, BaseTunerLayer):
            layer.merge()
            parent = module.model.get_submodule(name.rpartition(".")[0]) if "." in name else module.model
            setattr(parent, name.rpartition(".")[2], layer.get_base_layer())
    # a fresh decoder with the merged weights: one that once carried an injected adapter would save them
    # under peft's key prefix (measured: 'base_model.model.embed_tokens.weight'), which a plain load ignores
    decoder = module.model
    fresh = AutoModel.from_config(decoder.config, dtype=next(decoder.parameters()).dtype, attn_implementation="sdpa")
    fresh.load_state_dict(decoder.state_dict())
    bidirectional = getattr(decoder.config, "is_causal", True) is False
    module.model = set_bidirectional(fresh.to(next(decoder.parameters()).device).eval(), bidirectional)
    return model


def with_decoder(model: SentenceTransformer, decoder: nn.Module) -> SentenceTransformer:
    """The same retriever (tokenizer, prompts, pooling, lengths) over other decoder weights: a merge, or the base."""
    bidirectional = describe(model)["bidirectional"]
    transformer(model).model = set_bidirectional(decoder.to(model.device), bidirectional)
    return model


def features(model: SentenceTransformer, texts: Sequence[str], kind: str, prompt: str | None = None,
             max_length: int | None = None) -> dict:
    """Token features of queries (``kind='query'``) or passages, exactly as ``encode_query`` /
    ``encode_document`` make them: prompt prepended, the kind's length limit (or ``max_length``, training's
    shorter passages), ``prompt_length`` for pooling."""
    if prompt is None:
        prompt = model.prompts.get(kind, "")
    extra = {"max_length": max_length} if max_length is not None else {}
    feats = model.preprocess(list(texts), prompt=prompt or None, task=kind, **extra)
    return {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}


def embed(model: SentenceTransformer, feats: dict) -> torch.Tensor:
    """Differentiable embeddings of a features batch (the training forward pass)."""
    return model(dict(feats))["sentence_embedding"]


def embed_prompted(model: SentenceTransformer, prompts: Sequence[str], texts: Sequence[str], kind: str,
                   max_length: int | None = None) -> tuple[torch.Tensor, int]:
    """Differentiable embeddings of texts that each carry their own prompt, in one forward pass, each pooled as
    sentence-transformers pools that text alone with that prompt (tokenized as :func:`features` tokenizes it).

    sentence-transformers' ``Pooling`` takes one prompt length per batch, so prompt-aware pooling of a batch of
    mixed instructions (PO pools, FT-all) took one forward pass per instruction: measured on 2 cores (AMD EPYC Zen 4,
    bf16), the Search and FT-all steps of the committed run at 1.85-2.03 s against 1.61-1.76 s for the
    single-instruction experts. Returns (embeddings, real tokens)."""
    feats = features(model, [p + t for p, t in zip(prompts, texts, strict=True)], kind, "", max_length)
    feats.pop("prompt_length", None)
    out = transformer(model)(feats)
    if not pooling(model).include_prompt:
        # as Pooling._exclude_prompt_from_mask, with a length per row (counted as encode counts it): everything
        # before the row's first real token (left padding) and its prompt is left out of the mean
        module = transformer(model)
        lengths = torch.tensor([(module._get_prompt_length(p) or 0) if p else 0 for p in prompts],
                               device=feats["attention_mask"].device)
        mask = feats["attention_mask"]
        start = mask.to(torch.int32).argmax(dim=1)
        positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
        out["attention_mask"] = mask.masked_fill(positions < (start + lengths).unsqueeze(1), 0)
    for module in list(model)[1:]:
        out = module(out)
    return out["sentence_embedding"], int(feats["attention_mask"].sum())


def encode(model: SentenceTransformer, texts: Sequence[str], kind: str, prompt: str | None = None,
           batch_size: int = 32) -> torch.Tensor:
    """Inference embeddings (float32, CPU), through sentence-transformers' own ``encode_query`` / ``encode_document``."""
    if not texts:
        return torch.empty(0, model.get_sentence_embedding_dimension())
    fn = model.encode_query if kind == QUERY else model.encode_document
    kwargs = {"prompt": prompt} if prompt is not None else {}
    out = fn(list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False, **kwargs)
    return out.float().cpu()


def save(model: SentenceTransformer, out: str | Path, dtype: str | None = None) -> Path:
    """sentence-transformers' own save: the adapter only when the decoder is a PEFT model, else full weights.
    ``dtype``: the one the folder is scored in, recorded in it (:func:`record_dtype`)."""
    model.save(str(out))
    if dtype is not None:
        record_dtype(out, dtype)
    return Path(out)


def record_dtype(folder: str | Path, dtype: str) -> Path:
    """Make a folder we ship load in the dtype it was scored in: ``model_kwargs.dtype`` in its
    ``sentence_bert_config.json``, which sentence-transformers passes to ``from_pretrained``. Plain
    ``SentenceTransformer(path)`` then embeds as scored (an adapter folder: its base loads in that dtype, and peft
    keeps the LoRA weights in float32); an explicit ``model_kwargs`` of the caller still wins."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {sorted(DTYPES)}")
    file = Path(folder) / "sentence_bert_config.json"
    cfg = json.loads(file.read_text())
    cfg["model_kwargs"] = {**cfg.get("model_kwargs", {}), "dtype": dtype}
    file.write_text(json.dumps(cfg, indent=2) + "\n")
    return file


def describe(model: SentenceTransformer) -> dict:
    """What moves the numbers, read from the model itself: recorded in every result file."""
    module, pool, tok = transformer(model), pooling(model), tokenizer(model)
    base = module.model
    peft = isinstance(base, PeftModel)
    cfg = base.get_base_model().config if peft else base.config
    peft = peft or bool(getattr(base, "_hf_peft_config_loaded", False))  # the adapter SentenceTransformer(path) injects
    return {
        "model": portable(getattr(cfg, "_name_or_path", "")),
        "adapter": peft,
        "pooling": pool.pooling_mode,
        "include_prompt": pool.include_prompt,
        "padding_side": tok.padding_side,
        "eos_appended": tok("a")["input_ids"][-1] == tok.eos_token_id,
        "query_length": module.query_length,
        "document_length": module.document_length,
        "bidirectional": getattr(cfg, "is_causal", True) is False,
        "dtype": str(next(base.parameters()).dtype).replace("torch.", ""),
        "prompts": dict(model.prompts),
    }


def portable(path: str) -> str:
    """A repository-relative path where the path is inside the repository (results carry no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(paths.ROOT.resolve()))
    except (ValueError, OSError):
        return path
