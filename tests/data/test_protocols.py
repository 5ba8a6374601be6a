"""Protocol switches, fold tables, few-shot subsets, aggregation, and the CV / few-shot drivers."""

import json
import warnings

import numpy as np
import pytest
import soundfile as sf

from petl_kit.config import ConfigError
from petl_kit.data import make_synthetic
from petl_kit.data.protocols import (
    esc50_folds,
    few_shot,
    few_shot_indices,
    iemocap_folds,
    num_folds,
    protocol,
    summarize,
    us8k_folds,
)


def test_profile_switches_and_overrides():
    ref, cor = protocol("reference"), protocol()
    assert (ref.esc50_protocol, ref.us8k_protocol, ref.few_shot_sampler) == (
        "3-1-1", "test_as_val", "first_k")  # fmt: skip
    assert (cor.esc50_protocol, cor.us8k_protocol, cor.few_shot_sampler) == (
        "4-1", "no_test_selection", "random_episodes")  # fmt: skip
    assert protocol("reference", esc50_protocol="4-1").esc50_protocol == "4-1"
    with pytest.raises(ConfigError, match="esc50_protocol"):
        protocol(esc50_protocol="5-0")
    with pytest.raises(ConfigError, match="unknown protocol key"):
        protocol(esc_protocol="4-1")
    with pytest.raises(ConfigError, match="profile"):
        protocol("paper")


def test_fold_tables_match_the_spec():
    assert [esc50_folds(i, "3-1-1") for i in range(5)] == [
        ([1, 2, 3], [4], 5), ([2, 3, 4], [5], 1), ([3, 4, 5], [1], 2),
        ([4, 5, 1], [2], 3), ([5, 1, 2], [3], 4)]  # fmt: skip
    assert esc50_folds(0, "4-1") == ([2, 3, 4, 5], [], 1)
    assert us8k_folds(0, "test_as_val") == (list(range(1, 10)), 10)
    assert us8k_folds(1, "test_as_val") == (list(range(2, 11)), 1)
    assert us8k_folds(3, "test_as_val") == ([4, 5, 6, 7, 8, 9, 10, 1, 2], 3)
    assert us8k_folds(9, "test_as_val") == ([10, 1, 2, 3, 4, 5, 6, 7, 8], 9)
    assert us8k_folds(4, "no_test_selection") == ([1, 2, 3, 4, 6, 7, 8, 9, 10], 5)
    table = [(iemocap_folds(r)["train_sessions"], iemocap_folds(r)["session"],
              iemocap_folds(r)["val_speaker"]) for r in range(10)]  # fmt: skip
    assert table[0] == ([1, 2, 3, 4], 5, "F") and table[1] == ([1, 2, 3, 4], 5, "M")
    assert table[4] == ([3, 4, 5, 1], 2, "F") and table[9] == ([5, 1, 2, 3], 4, "M")
    assert num_folds("esc50") == 5 and num_folds("us8k") == 10 and num_folds("gsc") == 1
    assert num_folds("iemocap", iemocap_protocol="session") == 5 and num_folds("synthetic") == 1


def test_first_k_takes_the_first_k_per_class_in_loader_order():
    labels = [2, 0, 1, 0, 2, 0, 1, 2, 0]
    idx, notes = few_shot_indices(labels, 2, "first_k")
    assert idx == [0, 1, 2, 3, 4, 6] and notes == []
    idx, notes = few_shot_indices(labels, 3, "first_k")
    assert idx == [0, 1, 2, 3, 4, 5, 6, 7] and notes == [
        "class 1 has 2 training example(s) < k = 3: all used"
    ]


def test_random_episodes_are_seeded_stratified_and_vary():
    labels = np.repeat(np.arange(4), 10).tolist()
    a, _ = few_shot_indices(labels, 3, "random_episodes", seed=5)
    b, _ = few_shot_indices(labels, 3, "random_episodes", seed=5)
    c, _ = few_shot_indices(labels, 3, "random_episodes", seed=6)
    assert a == b != c and a == sorted(a)
    assert np.bincount(np.asarray(labels)[a]).tolist() == [3, 3, 3, 3]
    with pytest.raises(ConfigError, match="k = 0"):
        few_shot_indices(labels, 0, "first_k")
    with pytest.raises(ConfigError, match="few_shot_sampler"):
        few_shot_indices(labels, 1, "last_k")


def test_few_shot_keeps_val_and_test_complete_and_records_the_episode():
    s = make_synthetic(n_per_class=6, seed=0, clip_seconds=0.1)
    s.info["profile"] = "reference"
    ref = few_shot(s, 2)  # the profile recorded by the loader picks first_k
    assert ref.info["few_shot"]["sampler"] == "first_k" and len(ref.train) == 2 * s.num_classes
    assert ref.val is s.val and ref.test is s.test
    ep = few_shot(s, 2, sampler="random_episodes", seed=3)
    assert ep.info["few_shot"] == {"k": 2, "sampler": "random_episodes", "seed": 3,
                                   "n_train": 2 * s.num_classes, "warnings": []}  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        big = few_shot(s, 50, sampler="random_episodes")
    assert len(big.train) == len(s.train) and "all used" in str(caught[0].message)


def test_summarize_population_and_sample_std():
    # the independent reproduction of paper 1 (reference_numbers.md §1.6): 85.70 ± 1.16
    s = summarize([86.00, 86.50, 86.75, 85.75, 83.50])
    assert round(s["mean"], 2) == 85.70 and round(s["std"], 2) == 1.16
    assert s["std_sample"] == pytest.approx(np.std([86.00, 86.50, 86.75, 85.75, 83.50], ddof=1))
    assert np.isnan(summarize([0.5])["std_sample"]) and summarize([0.5])["std"] == 0.0


# ------------------------------------------------------------------ drivers (tiny runs)
@pytest.fixture
def esc_mini(tmp_path):
    """An ESC-50-layout tree with 2 classes x 2 clips per fold (0.2 s; stored at 16 kHz to keep
    these driver tests fast: resampling is the loaders' business, tested in test_esc50)."""
    root = tmp_path / "data" / "ESC-50"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows, rng = ["filename,fold,target,category,esc10,src_file,take"], np.random.default_rng(0)
    for fold in range(1, 6):
        for target, cat in ((0, "dog"), (1, "rooster")):
            for take in "AB":
                name = f"{fold}-{target}-{take}.wav"
                tone = np.sin(2 * np.pi * (300 + 900 * target) * np.arange(3200) / 16000)
                sf.write(
                    root / "audio" / name, 0.3 * tone + 0.01 * rng.standard_normal(3200), 16000
                )
                rows.append(f"{name},{fold},{target},{cat},False,0,{take}")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "data"


@pytest.fixture
def params(esc_mini, tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    return dict(
        experiment="cvtest", method="linear", dataset="esc50", data_path=str(esc_mini),
        backbone="ast", checkpoint=str(tiny_checkpoints["ast"]), max_length=24, epochs=1,
        batch_size=8, lr=None, seed=0, profile="reference", device="cpu", progress=False,
    )  # fmt: skip


def test_run_folds_writes_per_fold_results_mean_and_population_std(params, tmp_path):
    from petl_kit.experiments.crossval import run_folds

    out = run_folds(params, out_dir=tmp_path / "cv", dataset_options={"cache": True})
    saved = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert saved["status"] == "completed" and saved["kind"] == "cv"
    assert [f["fold"] for f in saved["folds"]] == [0, 1, 2, 3, 4]
    values = [f["test"]["accuracy"] for f in saved["folds"]]
    assert saved["values"] == values and saved["metric"] == "accuracy"
    assert saved["mean"] == pytest.approx(np.mean(values))
    assert saved["std"] == pytest.approx(np.std(values)) and saved["std_sample"] == pytest.approx(
        np.std(values, ddof=1))  # fmt: skip
    assert set(saved["metrics"]) >= {"accuracy", "balanced_accuracy"}
    assert saved["protocol"] == {
        "esc50_protocol": "3-1-1",
        "few_shot_sampler": "first_k",
        "profile": "reference",
    }
    assert all(f["sizes"] == {"train": 12, "val": 4, "test": 4} for f in saved["folds"])
    assert "population std over 5 folds" in saved["summary"] and out["mean"] == saved["mean"]
    fold2 = json.loads((tmp_path / "cv" / "fold2" / "dataset.json").read_text())
    assert fold2["info"]["test_fold"] == 2 and fold2["load_dataset"]["fold"] == 2
    assert (tmp_path / "cv" / "fold2" / "metrics.json").is_file()
    assert any((tmp_path / "cache" / "features").iterdir())  # the folds read the feature cache


def test_run_few_shot_writes_episodes_mean_and_std(params, tmp_path):
    from petl_kit.experiments.crossval import run_few_shot

    params = {**params, "profile": "corrected"}
    out = run_few_shot(params, [1, 2], episodes=2, base_seed=7, folds=[0], out_dir=tmp_path / "fs")
    saved = json.loads((tmp_path / "fs" / "metrics.json").read_text())
    assert saved["status"] == "completed" and [s["k"] for s in saved["shots"]] == [1, 2]
    k1 = json.loads((tmp_path / "fs" / "k1" / "metrics.json").read_text())
    assert k1["E"] == 2 and k1["seeds"] == [7, 8] and k1["sampler"] == "random_episodes"
    assert [e["episode"] for e in k1["episodes"]] == [0, 1]
    assert all(e["folds"][0]["n_train"] == 2 for e in k1["episodes"])  # 1 per class, 2 classes
    values = [e["value"] for e in k1["episodes"]]
    assert k1["values"] == values and k1["mean"] == pytest.approx(np.mean(values))
    assert k1["std_sample"] == pytest.approx(np.std(values, ddof=1))
    assert k1["std"] == pytest.approx(np.std(values)) and "sample std over 2" in k1["summary"]
    assert out["shots"][1]["episodes"][0]["folds"][0]["n_train"] == 4
    ref = run_few_shot({**params, "profile": "reference"}, 1, folds=[0], out_dir=tmp_path / "r")
    assert ref["E"] == 1 and ref["sampler"] == "first_k" and ref["seeds"] == []


def test_a_failing_fold_marks_the_call_failed(params, tmp_path):
    from petl_kit.experiments.crossval import run_folds

    with pytest.raises(Exception, match="fold 7 does not exist"):
        run_folds(params, folds=[7], out_dir=tmp_path / "bad")
    saved = json.loads((tmp_path / "bad" / "metrics.json").read_text())
    assert saved["status"] == "failed" and "fold 7" in saved["error"]
