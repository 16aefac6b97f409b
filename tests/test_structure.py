"""The package's walls: layers with one direction, no import hidden in a function, DVC deps that match the code."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "stm"
CORE = {"stm", "stm.config", "stm.io", "stm.paths", "stm.registry", "stm.core"}
STAGES = ["stm.data", "stm.synthesis", "stm.prompts", "stm.training", "stm.merging", "stm.figures",
          "stm.rehearsal"]  # the rehearsal's stand-ins and fake endpoint: tools over everything, used by nothing
TOP = {"stm.__main__", "stm.notebooks"}  # the CLI: may import anything, lazily (start-up time)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def layer(mod: str) -> int | None:
    """-1 for the core, the stage's index for a stage, None for the CLI."""
    if mod in TOP:
        return None
    if mod in CORE or mod.startswith("stm.core."):
        return -1
    for i, stage in enumerate(STAGES):
        if mod == stage or mod.startswith(stage + "."):
            return i
    raise AssertionError(f"{mod}: in no layer; add it to the core or a stage")


def stm_imports(tree: ast.AST, module: str, top_level_only: bool = False) -> set[str]:
    """Modules of stm imported by a module (resolved to existing modules: ``from stm.x import y`` may name a module)."""
    out = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "stm"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stm":
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return {m for m in out if m in MODULES}


def parse(mod: str) -> ast.AST:
    return ast.parse(MODULES[mod].read_text())


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m not in TOP))
def test_each_module_imports_only_the_core_and_earlier_stages(mod):
    own = layer(mod)
    for dep in stm_imports(parse(mod), mod):
        dep_layer = layer(dep)
        assert dep_layer is not None, f"{mod} imports the CLI {dep}"
        assert dep_layer <= own, f"{mod} (layer {own}) imports the later {dep} (layer {dep_layer})"
        if own == -1:
            assert dep_layer == -1, f"core module {mod} imports stage {dep}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m not in TOP))
def test_no_stm_import_hides_inside_a_function(mod):
    tree = parse(mod)
    assert stm_imports(tree, mod) == stm_imports(tree, mod, top_level_only=True), (
        f"{mod} imports stm modules inside a function; import them at the top (a cycle would show there)")


def test_a_layer_import_fails_without_a_hidden_cycle():
    """The layer check fails on a stage that imports a later one (the test above is not vacuous)."""
    tree = ast.parse("from stm.merging.run import run\n")
    assert layer("stm.data.build") < max(layer(d) for d in stm_imports(tree, "stm.data.build"))


@pytest.mark.parametrize("first", STAGES)
def test_stages_import_in_any_order(first):
    order = [first, *reversed([s for s in STAGES if s != first])]
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in order)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------------------------------------- DVC
def closure(mods: set[str]) -> set[str]:
    """Every stm module reached from ``mods``, with the packages on the way (their ``__init__``)."""
    seen: set[str] = set()
    todo = list(mods)
    while todo:
        m = todo.pop()
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        if m != "stm.__main__":  # the CLI's own imports are per command: cli_modules
            todo += stm_imports(parse(m), m)
    return seen


def cli_modules(command: str) -> set[str]:
    """The modules one ``python -m stm <command>`` runs: the CLI and what its handler imports."""
    tree = parse("stm.__main__")
    handler = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f"_cmd_{command}")
    top = stm_imports(ast.Module(body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)], type_ignores=[]),
                      "stm.__main__")
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    return {"stm.__main__"} | top | stm_imports(handler, "stm.__main__") | stm_imports(main, "stm.__main__")


def notebook_modules(name: str) -> set[str]:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return stm_imports(ast.parse(code), "notebook")


def stage_modules(cmd: str) -> set[str]:
    args = cmd.split()
    assert args[:3] == ["python", "-m", "stm"], cmd
    mods = cli_modules(args[3])
    if args[3] == "notebook":
        mods |= notebook_modules(args[4])
    return closure(mods)


def dvc_stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in stages.items():
        body = st.get("do", st)
        out[name] = {"cmd": body["cmd"].replace("${item}", "0").replace("${item.size}", "0")
                     .replace("${item.seed}", "0"), "deps": [d.replace("${item}", "x") for d in body.get("deps", [])]}
    return out


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_every_module_a_stage_runs_is_a_dvc_dependency(stage):
    st = dvc_stages()[stage]
    deps = [ROOT / d for d in st["deps"]]
    missing = []
    for mod in sorted(stage_modules(st["cmd"])):
        f = MODULES[mod]
        if not any(f == d or d in f.parents for d in deps):
            missing.append(str(f.relative_to(ROOT)))
    assert not missing, f"dvc.yaml stage {stage!r} runs these files but does not depend on them: {missing}"


def test_the_dvc_check_sees_a_missing_dependency():
    mods = stage_modules("python -m stm notebook 04_merge")
    assert "stm.core.evaluation" in mods and "stm.merging.run" in mods and "stm.config" in mods


def test_committed_results_record_no_absolute_path_of_a_machine():
    """Result files are committed: a path in them must be relative to the repository."""
    import re

    bad = [str(p.relative_to(ROOT)) for d in ("results", "benchmarks/results") for p in (ROOT / d).rglob("*.json")
           if re.search(r'"/(work|tmp|root|home|Users)/', p.read_text())]
    assert not bad, f"absolute paths in {bad}"


def stage_param_groups(cmd: str) -> set[str]:
    """The params groups one stage command resolves (``run.load("<group>")`` in its handler or notebook)."""
    import re

    args = cmd.split()
    tree = parse("stm.__main__")
    handler = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f"_cmd_{args[3]}")
    code = ast.unparse(handler)
    if args[3] == "notebook":
        nb = json.loads((ROOT / "notebooks" / f"{args[4]}.ipynb").read_text())
        code += "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    groups = set(re.findall(r"(?:config|run)\.load\(\s*['\"](\w+)['\"]", code))
    # a backbone preset (params.yaml `backbones:`) feeds the training, prompts and merging groups
    if not groups:
        return set()
    return ({"profile", *groups, *(f"profiles.${{profile}}.{g}" for g in groups)}
            | ({"backbone", "backbones"} if groups & {"training", "prompts", "merging"} else set()))  # PRESET_GROUPS


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_every_dvc_stage_lists_exactly_the_params_groups_it_reads(stage):
    """Whole groups, and the active profile's block of each (`profiles.${profile}.<group>`), nothing else."""
    listed = set((yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage].get("do") or
                  yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]).get("params", []))
    assert listed == stage_param_groups(dvc_stages()[stage]["cmd"]), f"dvc.yaml stage {stage!r}"


def test_the_params_check_sees_a_group_read_by_a_notebook():
    assert stage_param_groups("python -m stm notebook 02_prompts") == {
        "profile", "prompts", "training", "backbone", "backbones", "profiles.${profile}.prompts",
        "profiles.${profile}.training"}


def _dvc_params(repo: Path) -> dict[str, dict]:
    """What DVC tracks, per stage: the values of its params dependencies, read by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return {st.name: {k: v for d in st.deps if d.__class__.__name__ == "ParamsDependency"
                                for k, v in d.read_params().items()} for st in r.index.stages}


@pytest.mark.parametrize("profile", ["embedded", "smoke", "rehearsal"])
def test_dvc_reruns_a_profile_only_for_its_own_values(tmp_path, profile):
    """Edit one paper value: DVC must see no change in the embedded and smoke stages, and see it in the rehearsal's
    trainings (it inherits the paper block); a value of the profile's own group is seen by that stage."""
    import shutil

    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace("profile: embedded", f"profile: {profile}", 1))
    before = _dvc_params(tmp_path)
    text = params.read_text()
    params.write_text(text.replace("      epochs: 1\n", "      epochs: 2\n", 1))  # profiles.paper.training.epochs
    after = _dvc_params(tmp_path)
    moved = sorted(s for s in before if before[s] != after[s])
    if profile == "rehearsal":
        assert "train@med_real" in moved and "data" not in moved and "merge" not in moved
    else:
        assert moved == [], f"a paper-only edit would rerun {moved} in the {profile} profile"
    params.write_text(text.replace("  batch_size: 32\n", "  batch_size: 33\n", 1))  # evaluation.batch_size
    seen = _dvc_params(tmp_path)
    assert seen["baselines"] != before["baselines"] and seen["data"] == before["data"]


def _dvc_outs(repo: Path) -> dict[str, set[str]]:
    """Every stage's outputs as DVC resolves them (metrics and plots included), repository-relative."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return {st.name: {str(Path(o.fs_path).relative_to(repo)) for o in st.outs} for st in r.index.stages}


RUNS = [("embedded", "smollm2-12l"), ("smoke", "smollm2-2l"), ("paper", "qwen3-0.6b"), ("paper", "gemma-2b"),
        ("rehearsal", "qwen3-0.6b")]


def test_runs_of_different_profiles_and_backbones_never_share_an_output(tmp_path):
    """dvc.yaml names every output by `${profile}` (the data) or `${profile}/${backbone}` (what a backbone trains), and
    stm.paths writes to the same places: switching profile or backbone overwrites nothing (assets aside: a folder
    per model, persistent)."""
    import shutil

    from stm import paths

    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    text = (ROOT / "params.yaml").read_text()
    outs = {}
    for profile, backbone in RUNS:
        (tmp_path / "params.yaml").write_text(re.sub(r"(?m)^backbone: \S+", f"backbone: {backbone}",
                                                     text.replace("profile: embedded", f"profile: {profile}", 1), count=1))
        outs[profile, backbone] = _dvc_outs(tmp_path)
        lay = paths.Layout(profile, backbone)
        rel = lay.relative
        stage = outs[profile, backbone]
        assert rel(lay.expert_dir("med_real")) in stage["train@med_real"]
        assert rel(lay.expert_result("med_real")) in stage["train@med_real"]
        assert f"{rel(lay.reports)}/03_train_med_real.ipynb" in stage["train@med_real"]
        assert {rel(lay.merged), rel(lay.merging_record)} <= stage["merge"]
        assert rel(lay.selected_prompts) in stage["prompts"]
        assert {rel(lay.splits), rel(lay.tasks), rel(lay.data_stats),
                f"{rel(lay.profile_reports)}/00_data.ipynb"} <= stage["data"]
        # stm.notebooks.PROFILE_NOTEBOOKS: the notebooks whose reports DVC declares per profile
        assert {rel(lay.shn), f"{rel(lay.profile_reports)}/01_synthesis.ipynb"} <= stage["synthesis"]
        assert f"{rel(lay.reports)}/02_prompts.ipynb" in stage["prompts"]
        assert rel(lay.baselines) in stage["baselines"]
    shared = {"data/assets/models", "data/assets/pubmed"}
    for i, a in enumerate(RUNS):
        for b in RUNS[i + 1:]:
            same_profile = a[0] == b[0]
            for name in outs[a]:
                common = (outs[a][name] & outs[b][name]) - shared
                # two backbones of one profile share the profile's data and nothing else
                assert not common or (same_profile and name in ("data", "synthesis", "baselines")), (a, b, name, common)


def test_each_registry_implements_exactly_the_names_the_config_accepts():
    """The names params.yaml may use are a tuple in stm.config (validated before a stage is imported); the stage's
    registry implements each of them, and no other."""
    from stm import config
    from stm.core.evaluation import BASELINES
    from stm.merging.methods import MERGE_METHODS, get_method
    from stm.merging.methods import MergeError

    assert set(MERGE_METHODS) == set(config.MERGE_METHODS) and set(BASELINES) == set(config.BASELINES)
    with pytest.raises(MergeError, match=r"merging.methods: unknown merge method 'soup'; known: \['dare_ties'"):
        get_method("soup")


def test_the_environment_carries_compiled_bytecode():
    """`./run.sh` compiles the environment's bytecode at install: uv writes none by default, and where
    PYTHONDONTWRITEBYTECODE is set nothing else does, so every process (each stage, twice; each CLI test) compiled the
    stack from source, 18.4 s of imports against 8.4 s (docs/measurements.md)."""
    import importlib.util

    import sentence_transformers.base.model
    import transformers.modeling_utils

    for module in (sentence_transformers.base.model, transformers.modeling_utils):
        cached = Path(importlib.util.cache_from_source(module.__file__))
        assert cached.exists(), f"{cached.name}: no bytecode; set the environment up with ./run.sh setup, which compiles it"
