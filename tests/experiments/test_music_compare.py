"""The music notebooks' comparison loop as one function: the same splits for every method, one
folder per method inside ``compare-<id>/``, a table, and the report and dashboard reading the
methods' runs."""

import json

import pytest

import petl_kit as pk
from petl_kit.config import ConfigError
from petl_kit.experiments import music_compare
from petl_kit.experiments.report import collect_results
from petl_kit.views import widgets

PARAMS = dict(
    experiment="music_key", run_dir=None, dataset="synthetic_key", data_path=None, n_per_class=3,
    clip_seconds=1.0, backbone="mert", checkpoint="builtin:tiny-mert", encoder_depth=None,
    max_length=24000, profile="corrected", methods="probing,scratch", probe_layers="weighted_sum",
    epochs=1, batch_size=16, probe_lr=1e-3, ft_lr=3e-4, petl_lr=3e-3, scratch_lr=1e-3,
    min_lr=0.0, train_crop=None, eval_segment=None, select="last", seed=0, device="cpu",
    precision="fp32", activation_checkpointing=True,
    unrelated="a notebook's globals() hold more than the parameters",
)  # fmt: skip


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def test_compare_methods_writes_one_folder_per_method_and_the_dashboard_reads_them(outputs):
    splits = music_compare.load_splits(PARAMS)
    assert splits.name == "synthetic_key" and splits.sizes()["train"] > 0
    comparison = music_compare.compare_methods(splits, PARAMS, log=None)
    assert list(comparison.table["method"]) == ["probing", "scratch"]
    for run in comparison.results.values():  # the training switches reach every method's run
        assert run.params["activation_checkpointing"] is True and run.params["precision"] == "fp32"
    assert comparison.score == "key_weighted_ascending"
    assert {"test_key_weighted_ascending", "val_key_weighted_ascending", "trainable_params",
            "train_seconds"} <= set(comparison.table.columns)  # fmt: skip
    folder = comparison.folder
    assert folder.parent == outputs / "music_key" and folder.name.startswith("compare-")
    outer = json.loads((folder / "metrics.json").read_text())
    assert outer["kind"] == "compare" and outer["runs"] == ["probing", "scratch"]
    for name in ("probing", "scratch"):
        assert json.loads((folder / name / "metrics.json").read_text())["status"] == "completed"
    labels, probs = comparison.test_outputs("probing")
    assert probs.shape == (len(splits.test), 24) and len(labels) == len(splits.test)

    runs = collect_results("music_key")
    assert sorted(runs["run_id"]) == [f"{folder.name}/probing", f"{folder.name}/scratch"]
    assert set(runs["status"]) == {"completed"}
    dash = widgets.Dashboard("music_key")
    assert sorted(dash.table["method"]) == ["probing", "scratch"]
    assert dash.controls["metric"].value.startswith("test_")


def test_bad_method_lists_and_missing_parameters_are_named():
    splits = pk.load_dataset("synthetic_key", n_per_class=1, clip_seconds=1.0)
    with pytest.raises(ConfigError, match=r"unknown \['ssf_typo'\]; valid: probing, full_ft"):
        music_compare.compare_methods(splits, {**PARAMS, "methods": "probing,ssf_typo"})
    with pytest.raises(ConfigError, match="missing parameter.*petl_lr"):
        music_compare.compare_methods(splits, {k: v for k, v in PARAMS.items() if k != "petl_lr"})
