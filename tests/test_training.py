import shutil

import pytest
import torch

from stm.config import TrainingConfig
from stm.training.train import Interrupted, batch_order, checkpoint_dir, train
from conftest import group_config, params_text


def tiny_cfg(tiny_model, **kw) -> TrainingConfig:
    base = dict(backbone=str(tiny_model), batch_size=4, max_steps=6, warmup_steps=1, learning_rate=1e-2,
                checkpoint_every=2, dtype="float32", lora={"r": 4, "alpha": 8},
                format={"max_query_tokens": 16, "max_passage_tokens": 24}, variants={})  # every expert plain FT
    return group_config("training", **(base | kw))


def _adapter_tensors(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_training_reduces_loss_and_writes_records(tiny_model, processed, tmp_path, monkeypatch):
    from stm import paths

    monkeypatch.setattr(paths, "ROOT", tiny_model.parent)  # the backbone inside "the repository": named relative to it
    cfg = tiny_cfg(tiny_model, max_steps=12)
    rec = train(cfg, "med_real", tmp_path / "run", processed)
    log = __import__("json").loads((tmp_path / "run" / "train_log.json").read_text())
    assert len(log) == 12
    assert sum(h["loss"] for h in log[-3:]) < sum(h["loss"] for h in log[:3])
    assert rec.data["files"] and rec.data["rows"] == 24
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "run" / "adapter" / "modules.json").exists()  # a sentence-transformers folder
    assert rec.retriever["adapter"] is True and rec.retriever["model"] == tiny_model.name
    assert not checkpoint_dir(tmp_path / "run").exists()


def test_resume_after_interrupt_matches_uninterrupted(tiny_model, processed, tmp_path, caplog):
    import shutil

    cfg = tiny_cfg(tiny_model)
    train(cfg, "search", tmp_path / "full", processed)
    try:
        train(cfg, "search", tmp_path / "cut", processed, interrupt_after=3)
    except Interrupted:
        pass
    assert (checkpoint_dir(tmp_path / "cut") / "state.pt").exists()
    assert not (tmp_path / "cut" / "adapter").exists()
    shutil.rmtree(tmp_path / "cut", ignore_errors=True)  # what dvc repro does to a stage's outputs before a rerun
    with caplog.at_level("INFO", logger="stm.training.train"):
        train(cfg, "search", tmp_path / "cut", processed)
    assert "resuming search from step 2" in caplog.text
    assert not checkpoint_dir(tmp_path / "cut").exists()
    a, b = _adapter_tensors(tmp_path / "full"), _adapter_tensors(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_checkpoint_of_another_configuration_is_not_resumed(tiny_model, processed, tmp_path, caplog):
    try:
        train(tiny_cfg(tiny_model), "nlu", tmp_path / "x", processed, interrupt_after=3)
    except Interrupted:
        pass
    with caplog.at_level("INFO", logger="stm.training.train"):
        train(tiny_cfg(tiny_model, learning_rate=5e-3), "nlu", tmp_path / "x", processed)
    assert "another configuration" in caplog.text and "resuming" not in caplog.text
    log = __import__("json").loads((tmp_path / "x" / "train_log.json").read_text())
    assert [h["step"] for h in log] == list(range(1, 7))


def test_batch_order_is_seeded_and_covers_epochs():
    o1, o2 = batch_order(10, 4, 5, seed=3), batch_order(10, 4, 5, seed=3)
    assert o1 == o2 and len(o1) == 5 and all(len(b) == 4 for b in o1)
    assert batch_order(10, 4, 5, seed=4) != o1


def test_two_process_training_equals_single_process(tiny_model, processed, tmp_path):
    """torchrun --nproc-per-node 2 on gloo: same global-batch loss and the same adapter as one process."""
    import json
    import subprocess
    import sys

    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(params_text(yaml.safe_dump({"profile": "embedded", "backbone": str(tiny_model), "training": {
        "batch_size": 4, "max_steps": 2, "warmup_steps": 1, "learning_rate": 1e-2,
        "dtype": "float32", "lora": {"r": 4, "alpha": 8, "layers": None}, "format": {"max_query_tokens": 16, "max_passage_tokens": 24},
        "hard_negatives_in_denominator": "own"}})))
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nfrom stm import config\nfrom stm.training.train import train\n"
        f"cfg = config.load('training', Path({str(params)!r}))\n"
        f"train(cfg, 'nlu', Path(sys.argv[1]), Path({str(processed)!r}))\n")
    # gloo on CPU processes, also on a GPU machine (two ranks cannot share one GPU under NCCL)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], check=True, env=env)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                    str(script), str(tmp_path / "two")], check=True, env=env, timeout=300)
    one = json.loads((tmp_path / "one" / "train_log.json").read_text())
    two = json.loads((tmp_path / "two" / "train_log.json").read_text())
    assert abs(one[0]["loss"] - two[0]["loss"]) < 1e-4
    assert json.loads((tmp_path / "two" / "train_record.json").read_text())["world_size"] == 2
    a, b = _adapter_tensors(tmp_path / "one"), _adapter_tensors(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)


def test_empty_or_missing_split_fails_before_compute(tiny_model, processed, tmp_path):
    import pytest

    from stm.io import DataError

    (processed / "splits" / "nlu.jsonl").write_text("")
    with pytest.raises(DataError, match=r"nlu.jsonl: no triples"):
        train(tiny_cfg(tiny_model), "nlu", tmp_path / "x", processed)
    with pytest.raises(DataError, match=r"shn/search.jsonl: training file missing.*synthesis"):
        train(tiny_cfg(tiny_model, variant="shn"), "search", tmp_path / "y", processed)
    assert not (tmp_path / "x").exists()


def test_same_seed_gives_identical_adapters(tiny_model, processed, tmp_path):
    cfg = tiny_cfg(tiny_model, max_steps=3)
    train(cfg, "nlu", tmp_path / "a", processed)
    train(cfg, "nlu", tmp_path / "b", processed)
    a, b = _adapter_tensors(tmp_path / "a"), _adapter_tensors(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(tiny_cfg(tiny_model, max_steps=3, seed=99), "nlu", tmp_path / "c", processed)
    c = _adapter_tensors(tmp_path / "c")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    import pytest

    from stm.training.train import Dist, device_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match=r"local rank 1 has no GPU: this node has 1"):
        device_for(Dist(rank=1, world=2, local_rank=1))


def test_query_truncation_is_measured_and_recorded(tiny_model, processed, tmp_path):
    from stm.training.data import load_rows
    from stm.training.train import build_model, query_truncation

    cfg = tiny_cfg(tiny_model)
    rows, _ = load_rows(cfg, "nlu", processed)
    retriever = build_model(cfg)
    assert query_truncation(retriever, rows, 512, 0) == 0.0
    assert query_truncation(retriever, rows, 4, 0) == 1.0
    long = [r | {"instruction": "retrieve " * 40} for r in rows[:10]] + rows[10:]
    assert 0 < query_truncation(retriever, long, 16, 0) < 1
    rec = train(cfg.model_copy(update={"max_steps": 1}), "nlu", tmp_path / "t", processed)
    assert rec.query_truncated_fraction == query_truncation(retriever, rows, 16, cfg.seed)


def test_each_expert_trains_on_the_files_of_its_own_variant(tiny_model, processed):
    """A per-expert variant map (Table 6): SHN experts read the synthesis output, the others the plain splits."""
    import pytest

    from stm.io import DataError
    from stm.training.data import load_rows

    cfg = tiny_cfg(tiny_model).model_copy(update={"variants": {"nlu": "shn"}})
    rows, rec = load_rows(cfg, "search", processed)
    assert list(rec["files"]) == ["processed/splits/search.jsonl"]
    with pytest.raises(DataError, match=r"synthesis/shn/nlu.jsonl: training file missing for expert 'nlu' \(shn\); "
                                        "run the synthesis stage"):
        load_rows(cfg, "nlu", processed)


def test_a_training_stage_launches_its_own_processes_and_only_rank_0_writes(tiny_model, processed, tmp_path,
                                                                            monkeypatch):
    """training.processes: 2 makes the stage itself run torch.distributed (gloo on CPU processes here)."""
    import json

    from stm.paths import Layout
    from stm.training.launch import processes
    from stm.training.stage import train_and_evaluate

    layout = Layout("embedded", "b", tmp_path)
    shutil.copytree(processed, layout.processed)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = tiny_cfg(tiny_model, max_steps=2, processes=2)
    assert processes(cfg) == 2 and processes(cfg.model_copy(update={"processes": "auto"})) >= 1
    out = train_and_evaluate(layout, cfg, group_config("evaluation"), "nlu", evaluate=False)
    assert out.train.world_size == 2
    folder = layout.experts / "nlu"
    assert (folder / "adapter" / "adapter_config.json").exists()
    assert json.loads((folder / "train_record.json").read_text())["world_size"] == 2
    assert not list(layout.experts.glob(".nlu-launch.json"))  # the launch spec is scratch
    monkeypatch.setenv("WORLD_SIZE", "2")  # already inside torchrun: nothing more is launched
    assert processes(cfg) == 1


def _step_for(model):
    from stm.training.loss import InfoNCE
    from stm.training.train import Dist, Step

    return Step(model, InfoNCE(), None, None, [], Dist())


def test_mixed_instructions_take_one_query_forward(tiny_model, monkeypatch):
    """A batch of mixed instructions (PO pools, FT-all) takes one query forward, each row its own prompt, equal to
    encoding each row alone: last-token pooling over prompt + query, and prompt-aware mean pooling, which leaves each
    row's own prompt tokens (a different count per row) out of its mean."""
    from stm.config import FormatConfig
    from stm.core import retriever as R

    batch = [{"instruction": ins, "query": q} for ins, q in
             [("find abstracts", "heart attack risk"), ("retrieve passages", "statin dose"),
              ("find abstracts", "mouse liver fibrosis model"), ("answer the claim", "aspirin")]]
    for fmt, forwards in ((FormatConfig(pooling="lasttoken", include_prompt=True), 1),
                          (FormatConfig(pooling="mean", include_prompt=False, query_template="{instruction}\nQuery:\n{query}"), 1)):
        model = R.build(str(tiny_model), fmt, device="cpu")
        calls = []
        real = R.features
        monkeypatch.setattr(R, "features", lambda *a, **k: calls.append(1) or real(*a, **k))
        with torch.no_grad():
            got, _ = _step_for(model).embed_queries(batch)
        monkeypatch.setattr(R, "features", real)
        assert len(calls) == forwards
        with torch.no_grad():
            alone = torch.cat([R.embed(model, R.features(model, [r["query"]], R.QUERY,
                                                         R.prompt_for(model, r["instruction"]))) for r in batch])
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-4)


def test_a_checkpoint_of_other_backbone_weights_under_the_same_name_is_not_resumed(tiny_model, processed, tmp_path,
                                                                                     caplog):
    import shutil

    from safetensors.torch import load_file, save_file

    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_model, backbone)
    try:
        train(tiny_cfg(backbone), "nlu", tmp_path / "x", processed, interrupt_after=3)
    except Interrupted:
        pass
    weights = backbone / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3  # the same folder, other weights (a re-conversion, a changed asset)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with caplog.at_level("INFO", logger="stm.training.train"):
        train(tiny_cfg(backbone), "nlu", tmp_path / "x", processed)
    assert "another configuration" in caplog.text and "resuming" not in caplog.text


KILLED_CHILD = """
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[4])
from test_training import tiny_cfg
from stm.training import train as T

real = T.Step.__call__
def slow(self, batch):  # each step waits, so the parent can kill between checkpoints
    time.sleep(0.2)
    return real(self, batch)
T.Step.__call__ = slow
T.train(tiny_cfg(Path(sys.argv[1]), max_steps=16, checkpoint_every=2), "search", Path(sys.argv[3]), Path(sys.argv[2]))
"""


def test_a_sigkilled_training_resumes_to_the_same_adapter(tiny_model, processed, tmp_path):
    """A real kill (SIGKILL of a training process after its first checkpoint), then a rerun: the adapter equals an
    uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "child.py"
    script.write_text(KILLED_CHILD)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_model), str(processed), str(out),
                             str(Path(__file__).parent)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    state = checkpoint_dir(out) / "state.pt"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # past the first checkpoint, mid-way through the next steps
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and state.exists() and not (out / "adapter").exists()
    cfg = tiny_cfg(tiny_model, max_steps=16, checkpoint_every=2)
    train(cfg, "search", out, processed)
    train(cfg, "search", tmp_path / "whole", processed)
    a, b = _adapter_tensors(out), _adapter_tensors(tmp_path / "whole")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradcache_mini_batches_give_the_whole_batch_step(tiny_model, dropout):
    """training.mini_batch_size: the loss over all 8 rows, activations for 3 at a time. The adapter after one step
    equals that of the same step with every chunk's graph kept (the reference); without dropout that is the plain
    whole-batch step. With LoRA dropout each chunk is re-run with the random state of its first pass, so its masks
    are the reference's."""
    import torch

    from conftest import make_triples
    from stm.training.loss import InfoNCE
    from stm.training.train import Dist, Step, build_model

    rows = make_triples(8, "search", seed=3)

    def one_step(mini, reference=False):
        cfg = tiny_cfg(tiny_model, lora={"r": 4, "alpha": 8, "dropout": dropout}, mini_batch_size=mini)
        torch.manual_seed(0)
        model = build_model(cfg)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.5)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        step = Step(model, InfoNCE(cfg.temperature), opt, sched, params, Dist(), True, None, None, mini)
        model.train()
        torch.manual_seed(1)
        if reference:  # every chunk with its graph, in order: the masks GradCache's first pass draws
            parts = [(step.embed_queries(rows[i:i + 3])[0], step.embed_documents(rows[i:i + 3])[0])
                     for i in range(0, 8, 3)]
            qe = torch.cat([q for q, _ in parts])
            de = [torch.cat(col) for col in zip(*(d for _, d in parts))]
            loss = step.update(qe, de)
        else:
            loss, _ = step(rows)
        return loss, [p.detach().clone() for p in params]

    (l_ref, p_ref), (l_gc, p_gc) = one_step(None, reference=True), one_step(3)
    assert abs(l_ref - l_gc) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(p_ref, p_gc, strict=True)) < 1e-5
    if dropout == 0.0:
        l_plain, p_plain = one_step(None)
        assert abs(l_plain - l_gc) < 1e-5
        assert max((a - b).abs().max().item() for a, b in zip(p_plain, p_gc, strict=True)) < 1e-5


def test_an_expert_stage_also_trains_the_variant_a_merge_method_takes(tiny_model, processed, tmp_path, monkeypatch):
    """merging.variants: Med-Real's stage trains its own variant (FT) and, beside it, the PO variant Linear merges."""
    from stm.io import write_json
    from stm.paths import Layout
    from stm.training.stage import train_merge_variants

    layout = Layout("embedded", "b", tmp_path)
    shutil.copytree(processed, layout.processed)
    write_json(layout.selected_prompts, {"optimizer": "gp", "size": 2,
                                                         "pools": {"*": ["Find the passage", "Retrieve documents"]}})
    cfg = tiny_cfg(tiny_model, max_steps=2)
    mcfg = group_config("merging", methods=["linear", "ties"], variants={"linear": {"med_real": "po"}, "ties": {"med_real": "ft"}})
    records = train_merge_variants(layout, cfg, mcfg, "med_real")
    assert list(records) == ["po"]  # FT is the stage's own variant: not trained twice
    assert records["po"].variant == "po" and records["po"].data["prompts"]["optimizer"] == "gp2"
    assert (layout.expert_variant("med_real", "po") / "adapter" / "adapter_config.json").exists()
    assert not (layout.experts / ".med_real-variants" / "po").exists()  # moved into the stage's output
    assert train_merge_variants(layout, cfg, mcfg, "search") == {}
