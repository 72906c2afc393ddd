"""The MLP's save/load round trip."""

import json

import numpy as np
import pytest
import torch

from kfkit.errors import ModelLoadError
from kfkit.model import (
    EXPORT_FILE,
    ModelSpec,
    build_model,
    export_model,
    load_exported,
    load_model,
    predict_proba,
    save_model,
)


def _spec(n=5):
    return ModelSpec(name="t", feature_names=[f"f{i}" for i in range(n)], hidden_dims=[8, 4], dropout=0.2)


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model(_spec())
    model.feature_mean.fill_(3.0)
    model.feature_std.fill_(2.0)
    model.eval()
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    save_model(model, _spec(), tmp_path)
    loaded, spec = load_model(tmp_path)
    assert spec == _spec()
    np.testing.assert_array_equal(predict_proba(loaded, x), predict_proba(model, x))
    assert not loaded.training
    assert not (tmp_path / "model.pt").exists()


def test_missing_or_mismatched_files_are_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="model.json"):
        load_model(tmp_path)
    save_model(build_model(_spec()), _spec(), tmp_path)
    spec = json.loads((tmp_path / "model.json").read_text())
    spec["hidden_dims"] = [9]
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match="does not match"):
        load_model(tmp_path)


def test_exported_graph_matches_the_module_at_any_batch_size(tmp_path):
    torch.manual_seed(0)
    model = build_model(_spec())
    model.feature_mean.fill_(3.0)
    model.feature_std.fill_(2.0)
    model.eval()
    path = export_model(model, tmp_path)
    assert path == tmp_path / EXPORT_FILE
    exported = load_exported(tmp_path)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(17, 5)).astype(np.float32))
    with torch.inference_mode():
        for batch in (1, 17):
            torch.testing.assert_close(exported(x[:batch]), model(x[:batch]), rtol=0, atol=1e-6)
        assert exported(x).shape == (17,)


def test_exported_archive_with_pickled_payloads_is_refused(tmp_path):
    import zipfile

    export_model(build_model(_spec()), tmp_path)
    with pytest.raises(ModelLoadError, match="missing"):
        load_exported(tmp_path / "elsewhere")
    # Rewrite the archive so that one weight claims to be a pickle, as a tampered file could.
    source, tampered = tmp_path / EXPORT_FILE, tmp_path / "t" / EXPORT_FILE
    tampered.parent.mkdir()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
            zout.writestr(item, data)
    with pytest.raises(ModelLoadError, match="pickled"):
        load_exported(tampered.parent)
