"""Local stand-ins for the paper's hub models: tiny random weights in the three paper architectures.

Each stand-in has the paper backbone's architecture (Qwen3, Gemma version 1 as ``google/gemma-2b``, Phi-3 as
Phi-4-mini) and the tokenizer *class* its real model uses (``Qwen2Tokenizer``, ``GemmaTokenizer``,
``GPT2Tokenizer``), built offline from a BPE trained on a few hundred words, with the real special tokens and,
where the real model has one, a chat template. Nothing is downloaded: the rehearsal passes these folders where
the hub ids would go, so the paper profile's code paths run end to end on a CPU in minutes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from stm.core.beir import write_beir
from stm.core.tasks import mteb_subsets, resolve
from stm.data.bmretriever import PAPER_SIZES
from stm.io import atomic_path, write_json

CORPUS = (
    "Given a web search query, retrieve relevant passages that answer the query. Given a question, retrieve "
    "Wikipedia passages that answer the question. Given a claim, retrieve documents that support or refute the "
    "claim. Given a premise, retrieve a hypothesis that is entailed by the premise. Given a medical question, "
    "retrieve answers from doctors. Represent this passage passage: Query: patients with covid vaccine response "
    "cancer cells protein expression increased heart disease risk in clinical trial mice infection immune "
    "analysis drug dose levels decreased in rats brain tumor gene study statins lower cholesterol aspirin blood "
    "the a of and in to is was with for on by what how why which who when where does do can 0 1 2 3 4 5 6 7 8 9"
)
# a ChatML template, as Qwen3's and Phi-4-mini's tokenizers carry one (the retriever never applies it)
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass(frozen=True)
class StandIn:
    hub_id: str
    model_type: str
    tokenizer_class: str
    specials: dict[str, str]                 # bos/eos/pad/unk as the real tokenizer names them
    byte_level: bool                         # GPT-2-style byte-level BPE (Qwen2, GPT2) or SentencePiece-style (Gemma)
    chat_template: str | None = None
    config: dict = field(default_factory=dict)


STANDINS = {
    "qwen3-0.6b": StandIn("Qwen/Qwen3-0.6B", "qwen3", "Qwen2Tokenizer",
                          {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
                          True, CHATML, {"head_dim": 8, "tie_word_embeddings": True}),
    "gemma-2b": StandIn("google/gemma-2b", "gemma", "GemmaTokenizer",
                        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
                        False, None, {"head_dim": 8}),
    "phi4-mini": StandIn("microsoft/Phi-4-mini-instruct", "phi3", "GPT2Tokenizer",
                         {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                          "unk_token": "<|endoftext|>"}, True, CHATML, {"tie_word_embeddings": True}),
}


def _vocab_and_merges(spec: StandIn, vocab_size: int = 600) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A BPE trained on :data:`CORPUS` with the real tokenizer's pre-tokenization scheme."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = list(dict.fromkeys(spec.specials.values()))
    if spec.chat_template:
        specials += ["<|im_start|>", "<|im_end|>"]
    specials = list(dict.fromkeys(specials))
    tok = Tokenizer(models.BPE(unk_token=None if spec.byte_level else spec.specials["unk_token"]))
    if spec.byte_level:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece style: spaces become '▁', unknown bytes fall back to <0xNN> tokens
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
        specials += [f"<0x{b:02X}>" for b in range(256)]
        alphabet = sorted(set(CORPUS.replace(" ", "▁")))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def build_tokenizer(name: str):
    import transformers

    spec = STANDINS[name]
    vocab, merges = _vocab_and_merges(spec)
    cls = getattr(transformers, spec.tokenizer_class)
    tok = cls(vocab=vocab, merges=merges, **spec.specials)
    if spec.chat_template:
        tok.chat_template = spec.chat_template
    return tok


def build_model(name: str, out: Path, seed: int = 0) -> Path:
    """Write the stand-in for the paper backbone ``name`` (a key of :data:`STANDINS`) into ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = STANDINS[name]
    tok = build_tokenizer(name)
    ids = {k.replace("_token", "_token_id"): tok.convert_tokens_to_ids(v) for k, v in spec.specials.items()
           if k != "unk_token"}
    config = AutoConfig.for_model(spec.model_type, vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=512, **ids, **spec.config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with atomic_path(Path(out)) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "stm_asset.json", {"source": spec.hub_id, "revision": "rehearsal-stand-in",
                                            "stand_in": True, "tokenizer_class": spec.tokenizer_class})
    return Path(out)


# ----------------------------------------------------------------------------------------------- data and tasks
TOPICS = ("statins and cholesterol", "covid vaccine response", "tumor gene expression", "asthma in children",
          "insulin resistance", "heart failure drugs", "malaria in travellers", "sleep and memory",
          "influenza antivirals", "kidney stones diet", "migraine triggers", "obesity surgery outcomes")


def _passage(topic: str, k: int) -> str:
    """Three sentences, as an abstract has (the pre-training ablation cuts one out as the query)."""
    return (f"A study of {topic} in {40 + 7 * k} patients found that {topic} changed clinical outcomes. "
            f"The analysis reports risk, dose and response for {topic} over {k + 1} years of follow-up. "
            f"Further trials of {topic} in larger cohorts are needed before any change in practice.")


# The instructions: BMRetriever's published ones for the general sets (its prompt.py: MS MARCO, NQ, ELI5, FEVER,
# SNLI, Quora), and for the medical sets, written here from the datasets' own descriptions, not from our split rules
# (MedNLI: NLI on patients' clinical notes; Medical Question Pairs: doctor-written paraphrases; medical QA).
STANDIN_INSTRUCTIONS = {
    "search": ["Given a web search query, retrieve relevant passages that answer the query",
               "Given a web search query, retrieve relevant documents that answer the query"],
    "nlu": ["Given a question, retrieve Wikipedia passages that answer the question",
            "Provided a user question, retrieve the highest voted answers on Reddit ELI5 forum",
            "Given a claim, retrieve documents that support or refute the claim",
            "Given a premise, retrieve a hypothesis that is entailed by the premise",
            "Given a question, retrieve questions that are semantically equivalent to the given question"],
    "med_real": ["Given a premise from a patient's clinical notes, retrieve a hypothesis that is entailed by it",
                 "Given a medical question, retrieve questions that are semantically equivalent to it",
                 "Given a consumer health question, retrieve answers written by doctors"],
    "med_synth": ["Given a query, find articles that discuss the correlation between a lifestyle factor and a "
                  "disease"],
}


def _field(text: str, i: int):
    """A positive or negative in one of the schemas the loader accepts, in turn: a list of strings, a list of
    ``[instruction, text]`` pairs (E5-style), a mapping with a title and text, a bare string."""
    return [[text], [["", text]], [{"title": "", "text": text}], text][i % 4]


def build_ft_data(out: Path, scale: int = 1) -> Path:
    """A BMRetriever ``ft_data.json`` stand-in: JSON lines of ``{"query": [instruction, query], "pos": ..., "neg":
    ...}`` in Table 2's proportions (x ``scale``), the fields in each schema the loader accepts, then three rows it
    must count as unreadable and skip (an empty negative, a query that is not text, a line that is not JSON)."""
    lines = []
    for split, n in PAPER_SIZES.items():
        for i in range(round(n / 1000) * scale // 10):  # Table 2 / 10,000, times scale
            topic, other = TOPICS[i % len(TOPICS)], TOPICS[(i + 5) % len(TOPICS)]
            ins = STANDIN_INSTRUCTIONS[split][i % len(STANDIN_INSTRUCTIONS[split])]
            lines.append(json.dumps({"query": [ins, f"what is known about {topic} ({split} {i})"],
                                     "pos": _field(_passage(topic, i), i), "neg": _field(_passage(other, i), i + 1)}))
    lines += [json.dumps({"query": ["Given a web search query, retrieve relevant passages", "q"], "pos": ["p"],
                          "neg": [""]}),
              json.dumps({"query": 7, "pos": ["p"], "neg": ["n"]}),
              '{"query": ["broken'
              ]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out


def build_negatives(ft_data: Path, out: Path) -> Path:
    """A stand-in for ``ikim-uk-essen/stm_gpt5_hard_negatives``: ``bmretriever_index``, ``hard_negative``; every
    tenth row has none released (the join must count it)."""
    n = sum(1 for _ in ft_data.open())
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(json.dumps({"bmretriever_index": i, "hard_negative": "A synthetic passage on "
                                             f"{TOPICS[(i + 3) % len(TOPICS)]} that does not answer the query."})
                                 for i in range(n) if i % 10) + "\n")
    return out


def build_tasks(out: Path, tasks: list[str], dev_tasks: list[str], queries: int = 6, corpus: int = 24) -> Path:
    """Stand-ins for MTEB tasks: ``<out>/<task>/<subset>/`` BEIR folders with qrels for every split mteb scores
    (the test tasks' own splits, e.g. NanoFEVER's ``train`` and CUREv1's disciplines; ``dev`` for the dev sets)."""
    roles = {t: ["test"] for t in tasks}
    for t in dev_tasks:
        roles.setdefault(t, []).append("dev")
    for name, wanted in roles.items():
        specs = [resolve(name, None, role) for role in wanted]
        splits = [s for spec in specs for s in spec.splits]
        for subset in mteb_subsets(specs[0]):
            docs = {f"d{k}": _passage(TOPICS[k % len(TOPICS)], k) for k in range(corpus)}
            qs, qrels = {}, {}
            for j, split in enumerate(splits):
                for i in range(queries):
                    qid, k = f"{split}-q{i}", (i + j) % corpus
                    qs[qid] = f"what is known about {TOPICS[k % len(TOPICS)]} ({split} {i})"
                    qrels.setdefault(split, {})[qid] = {f"d{k}": 1}
            folder = out / name / subset
            write_beir(folder, docs, qs, qrels[splits[0]], splits[0], {"name": name, "stand_in": True})
            for split in splits[1:]:
                with (folder / "qrels" / f"{split}.tsv").open("w") as f:
                    f.write("query-id\tcorpus-id\tscore\n")
                    f.writelines(f"{q}\t{d}\t{s}\n" for q, docs_ in qrels[split].items() for d, s in docs_.items())
    return out


def build_all(root: Path, tasks: list[str], dev_tasks: list[str]) -> dict[str, str]:
    """Everything the rehearsal profile reads instead of the hub, under ``root``."""
    root = Path(root)
    out = {name: str(build_model(name, root / "models" / name)) for name in STANDINS}
    ft = build_ft_data(root / "ft_data.json")
    out |= {"ft_data": str(ft), "negatives": str(build_negatives(ft, root / "negatives.jsonl")),
            "tasks": str(build_tasks(root / "tasks", tasks, dev_tasks))}
    return out
