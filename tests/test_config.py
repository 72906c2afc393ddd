"""Composing, overriding and validating the Hydra config."""

import pytest

from kfkit.config import KfkitConfig, compose, from_dict, to_dict
from kfkit.errors import ConfigError


def test_defaults_compose_to_typed_config():
    cfg = compose([])
    assert isinstance(cfg, KfkitConfig)
    assert cfg.dataset.kind == "breast_cancer"
    assert cfg.model.name == "breast-cancer-mlp"  # interpolated from dataset.model_name
    # Training settings follow the data and the machine unless set (kfkit.training.plan).
    for key in ("epochs", "batch_size", "learning_rate", "nproc", "threads", "early_stopping_patience"):
        assert getattr(cfg.training, key) == "auto", key
    assert cfg.training.restore_best_weights is True


def test_overrides_reach_any_key_and_group():
    cfg = compose(["training.epochs=3", "dataset=synthetic_fraud", "dataset.n_rows=500", "model.hidden_dims=[32,16]"])
    assert cfg.training.epochs == 3
    assert cfg.dataset.kind == "synthetic_fraud"
    assert cfg.dataset.n_rows == 500
    assert cfg.model.hidden_dims == [32, 16]
    assert cfg.model.name == "fraud-mlp"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.epochz=3", "epochz"),
        ("training.epochs=abc", "abc"),
        ("dataset=nope", "nope"),
        ("training.backend=mpi", "mpi"),
        ("model.name=Bad_Name", "Bad_Name"),
        ("dataset=csv", "dataset.path"),
        ("dataset.val_fraction=0.75", "val_fraction"),
    ],
)
def test_bad_values_name_themselves(override, expected):
    with pytest.raises(ConfigError) as info:
        compose([override])
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.nproc=0", "training.nproc=0 must be auto or a whole number of processes (at least 1)"),
        ("training.nproc=many", "training.nproc='many' must be auto or a whole number of processes"),
        ("training.nproc=true", "training.nproc=True must be auto"),
        ("training.batch_size=1.5", "training.batch_size=1.5 must be auto or a whole number of rows per process"),
        ("training.learning_rate=0", "training.learning_rate=0 must be auto or a positive learning rate"),
        ("training.early_stopping_patience=-1", "training.early_stopping_patience=-1 must be auto"),
        ("training.threads=0", "training.threads=0 must be auto or a whole number of threads"),
    ],
)
def test_auto_or_number_training_settings_are_checked(override, message):
    with pytest.raises(ConfigError) as info:
        compose([override])
    assert message in str(info.value)


def test_auto_or_number_training_settings_take_numbers_and_survive_a_kfp_struct():
    cfg = compose(["training.nproc=2", "training.batch_size=64", "training.learning_rate=0.01", "training.epochs=auto"])
    assert (cfg.training.nproc, cfg.training.batch_size, cfg.training.learning_rate) == (2, 64, 0.01)
    data = to_dict(cfg)
    data["training"].update(nproc=2.0, batch_size=64.0, early_stopping_patience=0.0)  # protobuf Struct doubles
    again = from_dict(data)
    assert (again.training.nproc, again.training.batch_size, again.training.early_stopping_patience) == (2, 64, 0)
    assert isinstance(again.training.nproc, int) and again.training.epochs == "auto"


def test_dict_round_trip_drops_nulls_and_restores_them():
    cfg = compose(["dataset=synthetic_fraud"])
    data = to_dict(cfg)
    assert "path" not in data["dataset"]  # None is not a kfp struct value
    assert from_dict(data) == cfg


def test_from_dict_rejects_unknown_keys():
    data = to_dict(compose([]))
    data["training"]["learning_rat"] = 0.1
    with pytest.raises(ConfigError, match="learning_rat"):
        from_dict(data)


def test_numbers_that_went_through_a_kfp_struct_still_validate():
    data = to_dict(compose([]))
    data["drift"]["reference_rows"] = 1000.0  # protobuf Struct numbers are doubles
    data["training"]["learning_rate"] = 1.0
    cfg = from_dict(data)
    assert cfg.drift.reference_rows == 1000
    assert isinstance(cfg.training.learning_rate, float)


def test_a_new_key_under_a_map_field_gets_the_plus_hint() -> None:
    with pytest.raises(ConfigError, match=r"\+gate\.min_metrics\.pr_auc=VALUE"):
        compose(["gate.min_metrics.pr_auc=0.5"])
    cfg = compose(["+gate.min_metrics.pr_auc=0.5", "+training.cluster.node_selector.gpu=h100"])
    assert cfg.gate.min_metrics == {"roc_auc": 0.8, "pr_auc": 0.5}
    assert cfg.training.cluster.node_selector == {"gpu": "h100"}


def test_a_typo_in_a_typed_section_gets_no_plus_hint() -> None:
    with pytest.raises(ConfigError) as info:
        compose(["training.epochz=3"])
    assert "'+'" not in str(info.value) and "training.epochz" in str(info.value)


def test_server_flags_carry_every_server_option_through_the_servers_own_parser():
    """One conversion of a ServingConfig (kfkit.config.server_flags), read back by `kfkit serve`'s parser."""
    from kfkit.config import SERVER_OPTIONS, ServingConfig, server_flags
    from kfkit.serving.server import build_parser

    serving = ServingConfig(max_batch_size=7, max_batch_latency_ms=0.5, max_body_bytes=1234,
                            payload_log_url="http://x/", payload_log_queue_size=9)  # fmt: skip
    args = build_parser().parse_args(["--model-uri", "file:///m/1", *server_flags(serving)])
    assert {name: getattr(args, name) for name in SERVER_OPTIONS} == {
        name: getattr(serving, name) for name in SERVER_OPTIONS
    }
    runtime = server_flags(serving, payload_logging=False)
    assert runtime == ["--max-batch-size=7", "--max-batch-latency-ms=0.5", "--max-body-bytes=1234"]
    assert "--max-batch-latency-ms=2" in server_flags(ServingConfig())  # as Helm prints it


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("max_batch_size", 0, "must be at least 1"), ("max_batch_latency_ms", -1.0, "must not be negative"),
     ("payload_log_url", "ftp://x", "http:// or https://"), ("grpc_port", 70000, "not a TCP port")],
)  # fmt: skip
def test_serving_bounds_are_checked_once_for_config_and_flags(field, value, message):
    from kfkit.config import ServingConfig, check_serving

    bad = ServingConfig(**{field: value})
    with pytest.raises(ConfigError, match=message) as raised:
        check_serving(bad)
    assert str(raised.value).startswith(f"serving.{field}=")
    flag = "--" + field.replace("_", "-")
    with pytest.raises(ConfigError, match=message) as raised:
        check_serving(bad, key=lambda name: "--" + name.replace("_", "-"))
    assert str(raised.value).startswith(flag)
