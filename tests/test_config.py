import dataclasses

import pytest

from stm import config
from conftest import params_text
from stm.config import ConfigError


def write(tmp_path, text):
    """The repository's params with ``text``'s keys over them (malformed text as written)."""
    p = tmp_path / "params.yaml"
    p.write_text(params_text(text))
    return p


def test_every_group_validates_in_every_profile_of_the_repository():
    for group in config.GROUPS:
        for profile in config.PROFILES:
            assert config.load(group, profile=profile) is not None


def test_profile_overrides_apply_and_defaults_stay(tmp_path):
    p = write(tmp_path, "profile: smoke\ntraining:\n  max_steps: 40\n  temperature: 0.07\n"
                        "profiles:\n  smoke: {training: {max_steps: 3}}\n")
    cfg = config.load("training", p)
    assert cfg.max_steps == 3 and cfg.temperature == 0.07  # the group's value where the profile names none
    assert config.load("training", p, profile="embedded").max_steps == 40


@pytest.mark.parametrize("text,key", [
    ("training:\n  learning_rat: 0.1\n", "training.learning_rat"),            # unknown key
    ("training:\n  batch_size: many\n", "training.batch_size"),              # wrong type
    ("training:\n  temperature: -1\n", "training.temperature"),              # impossible value
    ("training:\n  lora: {r: 0}\n", "training.lora.r"),                      # nested
    ("merging:\n  experts: [med_real, cardiology]\n", "merging.experts"),  # unknown expert
    ("merging:\n  search: {alphas: [0.1, 1.5]}\n", "merging.search.alphas"),
    ("data:\n  split_sizes: {med_real: -3}\n", "data.split_sizes"),
    ("profiles:\n  smoke: {training: {dtype: float8}}\n", "training.dtype"),              # in a profile block
])
def test_bad_values_fail_naming_file_and_key(tmp_path, text, key):
    p = write(tmp_path, ("profile: smoke\n" if text.startswith("profiles") else "profile: embedded\n") + text)
    group = key.split(".")[0]
    with pytest.raises(ConfigError) as err:
        config.load(group, p)
    assert str(p) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text,match", [
    ("profile: huge\n", "profile: 'huge'"),
    ("trainin: {}\n", "unknown top-level key"),
    ("profiles:\n  huge: {training: {}}\n", r"profiles: unknown profile\(s\) \['huge'\]"),
    ("profiles:\n  smoke: {trainin: {}}\n", r"profiles.smoke: unknown group\(s\) \['trainin'\]"),
    ("profiles:\n  smoke: {training: [1]}\n", "profiles.smoke.training: must be a mapping"),
    ("training:\n  profiles:\n    smoke: {}\n", "training.profiles: a profile's overrides live in the top-level"),
    ("training: [1, 2]\n", "training: must be a mapping"),
    ("training: {a: [\n", "not valid YAML"),
])
def test_structural_errors_are_named(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        config.load("training", write(tmp_path, text))


def test_every_profile_block_names_every_group_dvc_tracks():
    """DVC fails on a missing `profiles.<profile>.<group>` key; the committed file names each one ({}: none)."""
    import yaml

    from stm import paths

    raw = yaml.safe_load(paths.PARAMS.read_text())
    assert set(raw["profiles"]) == set(config.PROFILES)
    for profile, block in raw["profiles"].items():
        assert set(block) == set(config.GROUPS), profile


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        config.load("training", tmp_path / "nope.yaml")


def test_format_templates_must_have_placeholders():
    with pytest.raises(ConfigError, match="training.format.query_template"):
        config.validate("training", {"format": {"query_template": "{instruction}"}})


def _fields(model, prefix=""):
    """(dotted key, default, nested model or None) of every field of a config model."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        nested = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        yield f"{prefix}{name}", field.default, nested
        if nested is not None:
            yield from _fields(nested, f"{prefix}{name}.")


def test_params_yaml_names_every_setting_that_runs_and_the_code_holds_no_second_copy():
    """Every leaf of every group is written in params.yaml's groups (nested ones too: a setting's class default never
    fills a gap in a run), and the group models carry no default of their own."""
    import yaml

    from stm import paths

    raw = yaml.safe_load(paths.PARAMS.read_text())

    def missing(given, resolved, key):
        if isinstance(resolved, dict) and not key.endswith(("split_sizes", "budgets", "variants")):
            if not isinstance(given, dict):
                return [key]
            return [m for k, v in resolved.items() for m in missing(given.get(k, KeyError), v, f"{key}.{k}")]
        return [key] if given is KeyError else []

    gaps, defaults = [], []
    for group, model in config.GROUPS.items():
        resolved = config.dump(config.load(group, profile="embedded"))
        resolved.pop("backbone", None) if group == "training" else None  # the top-level `backbone:` key
        gaps += missing(raw.get(group) or {}, resolved, group)
        defaults += [f"{group}.{n}" for n, f in model.model_fields.items() if not f.is_required()]
    assert not gaps, f"settings that run but params.yaml does not show: {gaps}"
    assert not defaults, f"defaults in stm/config.py (params.yaml holds them): {defaults}"
    with pytest.raises(ConfigError, match=r"training.learning_rate: Field required"):
        config.validate("training", {k: v for k, v in config.dump(config.load("training")).items()
                                     if k != "learning_rate"})


def test_every_config_key_is_read_by_some_code():
    """A key no stage reads is dead: it records a setting that moves nothing."""
    import re

    from stm import paths

    code = "\n".join(p.read_text() for p in (paths.ROOT / "stm").rglob("*.py") if p.name != "config.py")
    code += "\n".join(p.read_text() for p in (paths.ROOT / "notebooks").glob("*.ipynb"))
    dead = [f"{group}.{key}" for group, model in config.GROUPS.items() for key, _, _ in _fields(model)
            if not re.search(rf"\.{key.split('.')[-1]}\b", code)]
    assert not dead, f"config keys that no code reads: {dead}"


def test_one_key_selects_a_backbone_preset_table_9_and_table_6():
    """The top-level `backbone` picks its learning rate, batch, per-expert variants and PO method."""
    t = config.load("training", profile="paper", backbone="qwen3-0.6b")
    assert (t.backbone, t.learning_rate, t.batch_size) == ("qwen3-0.6b", 5e-5, 256)
    assert [t.variant_for(e) for e in ("med_real", "med_synth", "search", "nlu", "all")] == \
        ["shn_po", "po", "shn_po", "po", "ft"]
    prompts = config.load("prompts", profile="paper", backbone="qwen3-0.6b")
    assert (prompts.optimizer, prompts.gp_size) == ("gp", 10)
    gemma = config.load("training", profile="paper", backbone="gemma-2b")
    assert (gemma.learning_rate, gemma.batch_size, gemma.variant_for("med_real")) == (1e-5, 128, "ft")


def test_a_preset_sits_between_the_group_and_the_profile(tmp_path):
    p = write(tmp_path, "profile: paper\nbackbone: big\nbackbones:\n  big: {training: {learning_rate: 0.01, batch_size: 64},"
                        " prompts: {optimizer: gepa}}\ntraining:\n  learning_rate: 0.1\nprofiles:\n"
                        "  paper: {training: {batch_size: 32}}\nprompts: {}\n")
    t = config.load("training", p)
    assert (t.backbone, t.learning_rate, t.batch_size) == ("big", 0.01, 32)  # preset over the group, profile over it
    assert config.load("prompts", p).optimizer == "gepa"
    assert config.load("training", p, backbone="small").learning_rate == 0.1  # another backbone: no preset
    assert config.active_run(p) == ("paper", "big")
    run = config.Run.of(params=p)  # the run object: validated keys, its groups resolved for it, its folders
    assert (run.profile, run.backbone, run.load("training").learning_rate) == ("paper", "big", 0.01)
    assert run.paths.experts.parts[-3:] == ("paper", "big", "experts")
    other = config.Run.of("smoke", "small", p)  # a notebook's parameters in place of the file's keys
    assert (other.load("training").backbone, other.paths.results.parts[-2:]) == ("small", ("smoke", "small"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.profile = "embedded"  # built once, never rewritten
    with pytest.raises(ConfigError, match="profile: 'nope' is not one of"):
        config.Run.of("nope", params=p)


@pytest.mark.parametrize("text,named", [
    ("training: {backbone: qwen3-0.6b}\n", r"training.backbone: the backbone is the top-level `backbone:` key"),
    ("profiles:\n  paper: {training: {backbone: gemma-2b}}\n", r"profiles.paper.training.backbone: the backbone is"),
    ("backbone: [a, b]\n", r"backbone: \['a', 'b'\] must be a preset"),
])
def test_the_backbone_is_one_top_level_key(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named):
        config.load("training", write(tmp_path, "profile: paper\n" + text))


@pytest.mark.parametrize("backbone", ["/models/mine", "../up", "~/m"])
def test_a_run_names_its_output_folders_by_a_relative_backbone(tmp_path, backbone):
    """dvc.yaml interpolates the backbone into every output path: the run (what the CLI uses) refuses a name that
    would leave the repository; a script may still load a config for a model folder anywhere."""
    p = write(tmp_path, f"profile: paper\nbackbone: {backbone}\n")
    with pytest.raises(ConfigError, match=r"backbone: .* names the output folders .*use a relative name"):
        config.active_run(p)
    assert config.load("training", p).backbone == backbone


@pytest.mark.parametrize("text,named", [
    ("backbones:\n  smollm2: {ablations: {steps: 3}}\n", r"backbones.smollm2: unknown group\(s\) \['ablations'\]"),
    ("backbones:\n  smollm2: {merging: {variants: {linear: {medreal: po}}}}\n", r"merging.*variants.linear.*medreal"),
    ("backbones:\n  smollm2: {merging: {variants: {slerp: {med_real: po}}}}\n", r"merging.*variants.slerp"),
    ("backbones:\n  smollm2: {training: {variants: {medreal: po}}}\n", r"training.variants: .*unknown expert\(s\) \['medreal'\]"),
    ("backbones:\n  smollm2: {training: {variants: {nlu: best}}}\n", r"training.variants.nlu"),
])
def test_bad_presets_name_their_key(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named):
        config.check_params(write(tmp_path, text))  # every group a preset may set, as the CLI checks first


def test_every_backbone_preset_of_the_repository_validates():
    import yaml

    from stm import paths

    raw = yaml.safe_load(paths.PARAMS.read_text())
    assert set(raw["backbones"]) == {"qwen3-0.6b", "gemma-2b", "phi4-mini"}
    for backbone, preset in raw["backbones"].items():
        for group, values in preset.items():
            own = raw[group] | ({"backbone": backbone} if group == "training" else {})
            config.validate(group, config._deep_merge(config._deep_merge(own, values), raw["profiles"]["paper"][group]),
                            source=f"backbones.{backbone}")


def test_paper_ablations_are_configured_at_paper_scale():
    """Figure 4's 10K / 100K / 1.4M (all) rows, each at least one batch; Table 4 for every expert and FT-all."""
    a, t = config.load("ablations", profile="paper"), config.load("training", profile="paper", backbone="qwen3-0.6b")
    assert a.sizes == [10_000, 100_000, None] and a.steps is None
    assert all(n is None or n >= t.batch_size for n in a.sizes)
    assert a.variant_experts == ["med_real", "med_synth", "search", "nlu", "all"]


def test_every_expert_of_table_4_gets_a_cell_and_its_own_record(tmp_path):
    from stm.paths import Layout
    from stm.training.ablations import cell
    from stm.training.stage import result_path

    layout = Layout("paper", "b", tmp_path)
    a = config.load("ablations", profile="paper")
    cells = [cell(a, [10, 20], "variant", "po", expert=e) for e in a.variant_experts]
    assert [(e, n, o["variant"], o["variants"]) for e, n, o in cells][0] == ("med_real", "variant/po/med_real", "po", {})
    assert all("max_steps" not in o for _, _, o in cells)  # null steps: the paper's one-epoch schedule
    assert {result_path(layout, e, n) for e, n, _ in cells} == {layout.results / "ablations" / "variant_po" / f"{e}.json"
                                                                 for e in a.variant_experts}
    assert result_path(layout, "all", "size/0-1") == layout.results / "ablations" / "size_0-1.json"


def test_dtype_auto_is_resolved_in_one_place_and_configs_keep_the_result(monkeypatch):
    """``auto``: bf16 on a GPU and on a CPU with AMX-BF16 tiles or AVX512-BF16, float32 where bf16 would be
    emulated. The embedded run scores in ``auto`` and trains and generates in float32."""
    import torch

    def given(group, **values):  # the embedded group with these values
        return config.validate(group, config.dump(config.load(group, profile="embedded")) | values)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for amx, avx512_bf16 in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert config.native_bf16() is (amx or avx512_bf16)
    monkeypatch.setattr(config, "native_bf16", lambda: False)
    assert given("training", dtype="auto").dtype == "float32"
    assert given("evaluation", dtype="auto").dtype == "float32"
    monkeypatch.setattr(config, "native_bf16", lambda: True)
    assert given("training", dtype="auto").dtype == "bfloat16"
    assert given("training", dtype="float32").dtype == "float32"  # an explicit choice stays
    assert given("data", med_synth_generator={"dtype": "auto"}).med_synth_generator.dtype == "bfloat16"
    # the main line trains, scores and generates (data, negatives, prompts) in bf16 where it is native, float32
    # elsewhere; it merges in float32 on every CPU (the ablation cells' scoring dtype is ablations.eval_dtype, below)
    for native, dtype in ((True, "bfloat16"), (False, "float32")):  # False: e.g. AVX2 only, where bf16 is emulated
        monkeypatch.setattr(config, "native_bf16", lambda native=native: native)
        for profile in ("embedded", "smoke"):
            assert config.load("training", profile=profile).dtype == config.load("evaluation", profile=profile).dtype \
                == dtype
            assert config.load("data", profile=profile).med_synth_generator.dtype \
                == config.load("synthesis", profile=profile).generator.dtype \
                == config.load("prompts", profile=profile).generator.dtype == dtype
        assert config.load("merging", profile="embedded").dtype == "float32"
    with pytest.raises(ConfigError, match="training.dtype"):
        given("training", dtype="int8")


def test_ablation_cells_score_in_their_own_dtype_and_the_main_line_keeps_its_own(monkeypatch):
    """``ablations.eval_dtype``: the cells' scoring dtype (embedded: auto, so bf16 where it is native); null: the
    evaluation's. The cells' training and the main line's scoring are untouched."""
    from stm.training.ablations import cell_evaluation

    def given(**values):
        return config.validate("ablations", config.dump(config.load("ablations", profile="embedded")) | values)

    ecfg = config.validate("evaluation", config.dump(config.load("evaluation", profile="embedded")) | {"dtype": "float32"})
    for native, dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(config, "native_bf16", lambda native=native: native)
        scored = cell_evaluation(given(eval_dtype="auto"), ecfg)
        assert scored.dtype == dtype and scored.model_dump(exclude={"dtype"}) == ecfg.model_dump(exclude={"dtype"})
    assert ecfg.dtype == "float32"  # the main line's, unchanged
    assert cell_evaluation(given(eval_dtype=None), ecfg) is ecfg
    # the paper (and its rehearsal) score the cells as the main line: bfloat16 evaluation
    assert config.load("ablations", profile="paper").eval_dtype is None
    with pytest.raises(ConfigError, match="ablations.eval_dtype"):
        given(eval_dtype="float64")
