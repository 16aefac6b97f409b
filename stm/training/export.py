"""Load trained retrievers (adapter, merged folder or plain backbone) and export sentence-transformers folders.

An export is a full model (LoRA merged with ``merge_and_unload``) wrapped as a sentence-transformers
folder that keeps what other tools lose: last-token pooling, the EOS-appending tokenizer, left
padding, and the query/passage prompts. ``SentenceTransformer(path)`` then embeds exactly like the
unmerged model (tested to 1e-4).
"""

from __future__ import annotations

from pathlib import Path

from stm.config import FormatConfig
from stm.io import atomic_path, read_json, write_json
from stm.training.model import Retriever, load_backbone

RECORD = "stm_retriever.json"


def load_retriever(source: str | Path, fmt: FormatConfig | None = None, dtype: str | None = None,
                   merge: bool = True) -> tuple[Retriever, dict]:
    """Load an adapter folder, a merged/exported model folder, or a bare backbone; return (retriever, record)."""
    from peft import PeftModel

    source = Path(source) if Path(str(source)).exists() else source
    record = read_json(Path(source) / RECORD) if isinstance(source, Path) and (source / RECORD).exists() else {}
    if fmt is None:
        fmt = FormatConfig.model_validate(record["format"]) if record else FormatConfig()
    dtype = dtype or record.get("dtype", "float32")
    bidirectional = record.get("bidirectional", False)
    if isinstance(source, Path) and (source / "adapter_config.json").exists():
        model, tok = load_backbone(record["backbone_path"], dtype, bidirectional)
        model = PeftModel.from_pretrained(model, str(source))
        if merge:
            model = model.merge_and_unload()
        rec = record | {"adapter": str(source)}
    else:
        model, tok = load_backbone(str(source), dtype, bidirectional)
        rec = record | {"model": str(source)}
    model.eval()
    return Retriever(model, tok, fmt), rec


def export_sentence_transformers(retriever: Retriever, out: Path | str, record: dict,
                                 task_instructions: dict[str, str] | None = None, card: str | None = None) -> Path:
    """Write ``retriever`` (LoRA merged) as a sentence-transformers folder that keeps pooling and prompts."""
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    out = Path(out)
    model = retriever.model
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    fmt = retriever.fmt
    qprefix, qsuffix = fmt.query_template.split("{query}")
    pprefix, psuffix = fmt.passage_template.split("{passage}")
    if qsuffix or psuffix:
        raise ValueError("sentence-transformers prompts are prefixes: templates must end with {query}/{passage}")
    with atomic_path(out) as tmp:
        hf_dir = tmp / "_hf"
        model.save_pretrained(hf_dir)
        retriever.tokenizer.save_pretrained(hf_dir)
        prompts = {"query": qprefix.format(instruction=record.get("default_instruction", "")).lstrip("\n")
                   if "{instruction}" in qprefix else qprefix,
                   "passage": pprefix}
        for task, instruction in (task_instructions or {}).items():
            prompts[task] = qprefix.format(instruction=instruction)
        transformer = Transformer(str(hf_dir), max_seq_length=fmt.max_passage_tokens,
                                  processor_kwargs={"padding_side": fmt.padding_side})
        pooling = Pooling(model.config.hidden_size, pooling_mode=fmt.pooling)
        st = SentenceTransformer(modules=[transformer, pooling], prompts=prompts, device="cpu")
        st.save(str(tmp / "st"))
        for p in (tmp / "st").iterdir():
            p.rename(tmp / p.name)
        (tmp / "st").rmdir()
        import shutil

        shutil.rmtree(hf_dir)
        write_json(tmp / RECORD, record | {"format": fmt.model_dump(), "exported": True,
                                           "dtype": record.get("dtype", "float32")})
        if card:
            (tmp / "README.md").write_text(card)
    return out

