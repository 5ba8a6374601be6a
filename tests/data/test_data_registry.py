"""load_dataset dispatch, registration and argument errors."""

import numpy as np
import pytest

import petl_kit.data as data
from petl_kit.data import Clip, DatasetSplits, list_datasets, load_dataset, register_dataset


def test_builtin_names_and_dispatch(tmp_path):
    assert {"synthetic", "audiofolder", "csv"} <= set(list_datasets())
    ds = load_dataset("synthetic", None, n_per_class=2, task="source")
    assert ds.name == "synthetic-source" and ds.num_classes == 16
    small = load_dataset("synthetic", n_per_class=3, clip_seconds=0.05)
    root = data.write_audiofolder(small, tmp_path / "af")
    assert load_dataset("audiofolder", str(root)).sizes() == small.sizes()
    for name in data.__all__:
        assert hasattr(data, name)


def test_errors_name_the_option_and_the_valid_choices(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown dataset 'esc-50'; valid: \[.*'audiofolder'.*'synthetic'"
    ):
        load_dataset("esc-50", tmp_path)
    with pytest.raises(ValueError, match="'audiofolder' needs data_path"):
        load_dataset("audiofolder")
    with pytest.raises(ValueError, match="takes no data_path"):
        load_dataset("synthetic", tmp_path)
    with pytest.raises(
        TypeError, match=r"no option\(s\) \['n_per_clas'\]; valid options: \['task', 'n_per_class'"
    ):
        load_dataset("synthetic", n_per_clas=3)
    with pytest.raises(TypeError, match=r"no option\(s\) \['folds'\].*'fold'"):
        load_dataset("csv", tmp_path / "m.csv", folds=1)
    with pytest.raises(FileNotFoundError, match=r"nowhere"):
        load_dataset("audiofolder", tmp_path / "nowhere")


def test_register_dataset(monkeypatch):
    monkeypatch.setattr(data, "DATASETS", dict(data.DATASETS))
    calls = []

    def fake(data_path, *, fold=1):
        calls.append((data_path, fold))
        two = [Clip(np.zeros(8), label, 8) for label in (0, 1)]  # load_dataset refuses one class
        return DatasetSplits("fake", ["a", "b"], "multiclass", two, [], [])

    register_dataset("fake", fake)
    assert "fake" in list_datasets()
    assert load_dataset("fake", "/x", fold=3).name == "fake" and calls[0][1] == 3
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("fake", fake)
    register_dataset("fake", fake, overwrite=True)
