import pytest
import torch

from stm.config import FormatConfig
from stm.training.model import Retriever, load_backbone, pool
from tiny import make_model


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3", "phi3"])
def test_bidirectional_switch_controls_future_token_influence(tmp_path, arch):
    folder = make_model(tmp_path / arch, arch)
    for bidirectional in (False, True):
        model, tok = load_backbone(str(folder), "float32", bidirectional)
        batch = tok(["the patients with covid vaccine response"], return_tensors="pt")
        changed = batch["input_ids"].clone()
        changed[0, -2] = tok.convert_tokens_to_ids("cancer")  # a later token (before the EOS)
        with torch.no_grad():
            h1 = model(**batch).last_hidden_state
            h2 = model(input_ids=changed, attention_mask=batch["attention_mask"]).last_hidden_state
        first_changed = not torch.allclose(h1[0, 0], h2[0, 0], atol=1e-6)
        assert first_changed == bidirectional, f"{arch}: bidirectional={bidirectional}"


def test_pooling_picks_the_right_positions():
    # hidden state value = position index, so an index mistake cannot hide (tevatron-style)
    hidden = torch.arange(5, dtype=torch.float32).view(1, 5, 1).repeat(3, 1, 2)
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert pool(hidden, left, "lasttoken")[:, 0].tolist() == [4, 4, 4]
    assert pool(hidden, right, "lasttoken")[:, 0].tolist() == [2, 4, 0]
    assert pool(hidden, left, "mean")[:, 0].tolist() == [3.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        pool(hidden, left, "cls")


def test_tokenizer_appends_eos_even_when_truncating(tiny_model):
    _, tok = load_backbone(str(tiny_model), "float32")
    ids = tok("the patients with covid vaccine response", truncation=True, max_length=4)["input_ids"]
    assert len(ids) == 4 and ids[-1] == tok.eos_token_id
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_retriever_formats_and_batch_invariance(tiny_model, texts):
    model, tok = load_backbone(str(tiny_model), "float32")
    r = Retriever(model, tok, FormatConfig(pooling="lasttoken"))
    assert r.text.query("q", "Find it") == "Find it\nQuery: q"
    assert r.text.passage("p") == "Represent this passage\npassage: p"
    together = r.encode(texts, 32, batch_size=4)
    alone = torch.cat([r.encode([t], 32) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)  # left padding does not move embeddings
