import pytest

from stm import config
from stm.config import ConfigError


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_every_group_validates_in_every_profile_of_the_repository():
    for group in config.GROUPS:
        for profile in config.PROFILES:
            assert config.load(group, profile=profile) is not None


def test_profile_overrides_apply_and_defaults_stay(tmp_path):
    p = write(tmp_path, "profile: smoke\ntraining:\n  max_steps: 40\n  batch_size: 8\n  profiles:\n    smoke: {max_steps: 3}\n")
    cfg = config.load("training", p)
    assert cfg.max_steps == 3 and cfg.batch_size == 8
    assert config.load("training", p, profile="embedded").max_steps == 40


@pytest.mark.parametrize("text,key", [
    ("training:\n  learning_rat: 0.1\n", "training.learning_rat"),            # unknown key
    ("training:\n  batch_size: many\n", "training.batch_size"),              # wrong type
    ("training:\n  temperature: -1\n", "training.temperature"),              # impossible value
    ("training:\n  lora: {r: 0}\n", "training.lora.r"),                      # nested
    ("training:\n  experts: [med_real, cardiology]\n", "training.experts"),  # unknown expert
    ("merging:\n  search: {alphas: [0.1, 1.5]}\n", "merging.search.alphas"),
    ("data:\n  split_sizes: {med_real: -3}\n", "data.split_sizes"),
    ("training:\n  profiles:\n    smoke: {dtype: float8}\n", "training.dtype"),
])
def test_bad_values_fail_naming_file_and_key(tmp_path, text, key):
    p = write(tmp_path, "profile: smoke\n" + text)
    group = key.split(".")[0]
    with pytest.raises(ConfigError) as err:
        config.load(group, p)
    assert str(p) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text,match", [
    ("profile: huge\n", "profile: 'huge'"),
    ("trainin: {}\n", "unknown top-level key"),
    ("training:\n  profiles:\n    huge: {}\n", "unknown profile"),
    ("training: [1, 2]\n", "training: must be a mapping"),
    ("training: {a: [\n", "not valid YAML"),
])
def test_structural_errors_are_named(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        config.load("training", write(tmp_path, text))


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        config.load("training", tmp_path / "nope.yaml")


def test_format_templates_must_have_placeholders():
    with pytest.raises(ConfigError, match="evaluation.format.query_template"):
        config.validate("evaluation", {"format": {"query_template": "{instruction}"}})
