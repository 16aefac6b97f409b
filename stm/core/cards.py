"""Model cards for the folders we ship (experts and merges), in sentence-transformers' format: a YAML header, what the
model is, how it was made, its scores with their 95% intervals, and how to load it."""

from __future__ import annotations

from stm.core.records import Evaluation
from stm.core.stats import bootstrap_mean


def model_card(title: str, record: Evaluation, recipe: list[str], data: list[str] | None = None) -> str:
    """``record``: the model's evaluation record (scores, per-query nDCG@10, the model as scored); ``recipe`` and
    ``data``: one line each of how it was made and what it was trained on."""
    model = record.model
    interval = bootstrap_mean(record)
    avg = record.average
    ci = f" [{interval[1]:.3f}, {interval[2]:.3f}]" if interval else ""
    n = record.queries
    rows = "\n".join(f"| {t} | {s['ndcg_at_10']:.3f} | {s['recall_at_10']:.3f} |" for t, s in record.scores.items())
    task = next(iter(record.scores), "query")
    lines = [
        "---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, feature-extraction, retrieval, biomedical, stm]", "license: mit", "---", "",
        f"# {title}", "",
        "A dense retriever from a decoder LLM, made with the Synthesize-Train-Merge recipe (arXiv 2602.04731) by "
        "this repository.", "",
        f"- **Base model**: `{model.get('model', '?')}`; pooling `{model.get('pooling')}` "
        f"(prompt tokens {'in' if model.get('include_prompt') else 'out of'} the mean), EOS appended, "
        f"{model.get('padding_side')} padding, {model.get('query_length')} query / {model.get('document_length')} "
        f"passage tokens, {model.get('dtype')}",
        *(f"- {line}" for line in recipe),
        *(["", "## Training data", "", *(f"- {line}" for line in data)] if data else []),
        "", f"## Scores ({record.split} split, nDCG@10 and Recall@10)", "",
        "| task | nDCG@10 | Recall@10 |", "|---|---|---|", rows, "",
        f"Average nDCG@10: **{avg:.3f}**{ci} (95% bootstrap interval over {n} queries).", "",
        "## Use", "", "```python", "from sentence_transformers import SentenceTransformer", "",
        "model = SentenceTransformer(path)   # this folder: tokenizer, pooling, prompts and adapter as scored",
        f'q = model.encode_query(["statin therapy after myocardial infarction"], prompt_name="{task}")',
        'd = model.encode_document(["Statins lower LDL cholesterol ..."])', "print(model.similarity(q, d))", "```", "",
        "Each task's instruction is a saved prompt (`model.prompts`); `prompt_name` picks it.", ""]
    return "\n".join(lines)
