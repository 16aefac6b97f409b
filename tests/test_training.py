import torch

from stm.config import TrainingConfig
from stm.training.train import Interrupted, batch_order, train


def tiny_cfg(tiny_model, **kw) -> TrainingConfig:
    base = dict(backbone=str(tiny_model), batch_size=4, max_steps=6, warmup_steps=1, learning_rate=1e-2,
                checkpoint_every=2, dtype="float32", lora={"r": 4, "alpha": 8},
                format={"max_query_tokens": 16, "max_passage_tokens": 24})
    return TrainingConfig.model_validate(base | kw)


def _adapter_tensors(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_training_reduces_loss_and_writes_records(tiny_model, processed, tmp_path):
    cfg = tiny_cfg(tiny_model, max_steps=12)
    rec = train(cfg, "med_real", tmp_path / "run", processed)
    log = __import__("json").loads((tmp_path / "run" / "train_log.json").read_text())
    assert len(log) == 12
    assert sum(h["loss"] for h in log[-3:]) < sum(h["loss"] for h in log[:3])
    assert rec["data"]["files"] and rec["data"]["rows"] == 24
    assert (tmp_path / "run" / "adapter" / "stm_retriever.json").exists()
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_resume_after_interrupt_matches_uninterrupted(tiny_model, processed, tmp_path):
    cfg = tiny_cfg(tiny_model)
    train(cfg, "search", tmp_path / "full", processed)
    try:
        train(cfg, "search", tmp_path / "cut", processed, interrupt_after=3)
    except Interrupted:
        pass
    assert (tmp_path / "cut" / "checkpoint" / "state.pt").exists()
    assert not (tmp_path / "cut" / "adapter").exists()
    train(cfg, "search", tmp_path / "cut", processed)
    a, b = _adapter_tensors(tmp_path / "full"), _adapter_tensors(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_batch_order_is_seeded_and_covers_epochs():
    o1, o2 = batch_order(10, 4, 5, seed=3), batch_order(10, 4, 5, seed=3)
    assert o1 == o2 and len(o1) == 5 and all(len(b) == 4 for b in o1)
    assert batch_order(10, 4, 5, seed=4) != o1
