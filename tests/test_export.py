from stm.training.export import export_sentence_transformers, load_retriever
from stm.training.train import train
from test_training import tiny_cfg


def test_sentence_transformers_export_embeds_like_the_unmerged_model(tiny_model, processed, tmp_path, texts):
    from sentence_transformers import SentenceTransformer

    for pooling in ("lasttoken", "mean"):
        cfg = tiny_cfg(tiny_model, max_steps=3, format={"pooling": pooling, "max_query_tokens": 16,
                                                        "max_passage_tokens": 24})
        train(cfg, "med_real", tmp_path / pooling, processed)
        unmerged, rec = load_retriever(tmp_path / pooling / "adapter", dtype="float32", merge=False)
        out = export_sentence_transformers(unmerged, tmp_path / f"st-{pooling}", rec | {"default_instruction": "Find"},
                                           {"pubmed-claims": "Given a claim"})
        unmerged, _ = load_retriever(tmp_path / pooling / "adapter", dtype="float32", merge=False)
        st = SentenceTransformer(str(out), device="cpu")
        passages = st.encode(texts, prompt_name="passage", convert_to_tensor=True)
        ref = unmerged.encode([unmerged.text.passage(t) for t in texts], 24)
        assert (passages - ref).abs().max() < 1e-4, pooling
        queries = st.encode(texts[:2], prompt_name="pubmed-claims", convert_to_tensor=True)
        ref_q = unmerged.encode([unmerged.text.query(t, "Given a claim") for t in texts[:2]], 24)
        assert (queries - ref_q).abs().max() < 1e-4
        assert st.tokenizer.padding_side == "left"
        assert (out / "stm_retriever.json").exists()
