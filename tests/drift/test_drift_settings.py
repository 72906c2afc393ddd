"""drift.* settings: DriftConfig (main env) and the detector's DriftSettings stay one schema with one set of checks."""

import dataclasses

import pytest

from kfkit.config import DriftConfig, compose, to_dict
from kfkit.errors import ConfigError
from kfkit.serving.drift.settings import DriftSettings


def test_the_detector_reads_the_fields_drift_config_has_with_the_same_defaults():
    config = {f.name: f for f in dataclasses.fields(DriftConfig)}
    settings = {f.name: f for f in dataclasses.fields(DriftSettings)}
    assert list(config) == list(settings)
    assert dataclasses.asdict(DriftConfig()) == dataclasses.asdict(DriftSettings())


def test_every_drift_config_field_has_a_docstring(repo):
    text = (repo / "kfkit" / "config" / "serving.py").read_text()
    block = text[text.index("class DriftConfig:") : text.index("class DeployConfig:")]
    for field in dataclasses.fields(DriftConfig):
        after = block[block.index(f"    {field.name}: ") :].split("\n", 2)
        assert after[1].strip().startswith('"""'), f"drift.{field.name} has no docstring"


@pytest.mark.parametrize("option", ["tabular", "mmd", "psi"])
def test_each_detector_option_composes_and_builds_settings(option):
    cfg = compose([f"drift={option}"])
    assert cfg.drift.detector == option
    settings = DriftSettings.from_mapping(to_dict(cfg)["drift"])
    assert settings.detector == option and settings.window_size == 200


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("drift.detector=ks", "drift.detector"),
        ("drift.correction=holm", "drift.correction"),
        ("drift.p_val=1.5", "drift.p_val"),
        ("drift.overlap=1.0", "drift.overlap"),
        ("drift.window_size=1", "drift.window_size"),
        ("drift.min_window_rows=500", "min_window_rows"),
        ("drift.window_seconds=-1", "window_seconds"),
        ("drift.psi_threshold=0", "psi_threshold"),
        ("+drift.performance_floors.f1=0.5", "f1"),
        ("drift.performance_floors.accuracy=2", "accuracy"),
        ("drift.performance_min_labels=1000", "performance_min_labels"),
        ("drift.sink=ftp://x", "drift.sink"),
    ],
)
def test_bad_drift_values_are_refused_by_name(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        compose([override])


def test_a_published_section_with_a_typo_or_a_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="window_sise"):
        DriftSettings.from_mapping({"window_sise": 10})
    with pytest.raises(ConfigError, match="drift.window_size='10'"):
        DriftSettings.from_mapping({"window_size": "10"})
    with pytest.raises(ConfigError, match="drift.output_drift"):
        DriftSettings.from_mapping({"output_drift": 1})


def test_a_section_that_went_through_a_kfp_struct_still_builds():
    settings = DriftSettings.from_mapping({"window_size": 200.0, "psi_bins": 10.0, "n_permutations": 50})
    assert settings.window_size == 200 and isinstance(settings.window_size, int) and settings.n_permutations == 50
    assert DriftSettings.from_mapping(None) == DriftSettings()


def test_command_line_overrides_are_checked_too():
    assert DriftSettings().replace(window_size=50, detector=None).window_size == 50
    with pytest.raises(ConfigError, match="overlap"):
        DriftSettings().replace(overlap=2.0)
