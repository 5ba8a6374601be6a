"""A csv manifest's own folds as the protocol (run_experiment, run_folds, fold: all) and its
optional group column keeping train and validation group-disjoint."""

import csv
from pathlib import Path

import pytest

import petl_kit as pk
from petl_kit.data import load_csv
from petl_kit.data.base import DatasetError
from petl_kit.data.protocols import carve_splits, dataset_folds, manifest_fold_labels
from petl_kit.experiments.crossval import run_folds


@pytest.fixture
def manifest(tmp_path, write_wav, sine):
    """36 clips, folds 1..3, 2 classes, 12 speakers (3 clips each, all in one fold)."""
    rows = []
    for i in range(36):
        write_wav(f"a/{i}.wav", sine(0.2, 16000, 300 + 40 * (i % 2)), 16000)
        rows.append([f"a/{i}.wav", "xy"[i % 2], str(i // 12 + 1), f"spk{i // 3}"])
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "fold", "group"])
        w.writerows(rows)
    return path


def test_folds_are_the_manifests_own_labels(manifest):
    assert manifest_fold_labels(manifest) == [1, 2, 3]
    assert dataset_folds("csv", manifest) == [1, 2, 3]
    assert dataset_folds("esc50") == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_validation_is_group_disjoint_from_training(manifest, seed):
    ds = load_csv(manifest, fold=3, val_fraction=0.25, seed=seed)
    train, val = {c.meta["group"] for c in ds.train}, {c.meta["group"] for c in ds.val}
    assert train and val and not train & val
    assert {c.meta["fold"] for c in ds.test} == {"3"}
    assert ds.info["group_column"] == "group" and ds.info["fold"] == 3
    assert ds.info["groups"] == {"train": len(train), "val": len(val), "test": 4}


def test_random_split_with_groups_is_disjoint_everywhere(tmp_path, manifest):
    text = manifest.read_text().splitlines()
    plain = tmp_path / "nofold.csv"  # drop the fold column
    plain.write_text("\n".join(",".join(r.split(",")[:2] + r.split(",")[3:]) for r in text))
    ds = load_csv(plain, val_fraction=0.2, test_fraction=0.2)
    sides = [{c.meta["group"] for c in part} for part in (ds.train, ds.val, ds.test)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


def test_one_group_cannot_be_split():
    with pytest.raises(DatasetError, match="1 group.*cannot be split"):
        carve_splits([0, 1, 0, 1], ["a"] * 4, 0.5, 0.0, 0)


def _params(manifest, ckpt, **over):
    return dict(
        experiment="folds", method="linear", dataset="csv", data_path=str(manifest),
        backbone="ast", checkpoint=str(ckpt), max_length=100, epochs=1, batch_size=8, lr=None,
        seed=0, profile="corrected", device="cpu", progress=False, **over,
    )  # fmt: skip


def test_run_experiment_picks_a_manifest_fold(manifest, tiny_checkpoints, tmp_path):
    result = pk.run_experiment(_params(manifest, tiny_checkpoints["ast"], fold=2), tmp_path / "r")
    assert {c.meta["fold"] for c in result.splits.test} == {"2"}
    assert result.metrics["sizes"]["test"] == 12


def test_run_folds_runs_every_manifest_fold(manifest, tiny_checkpoints, tmp_path):
    summary = run_folds(_params(manifest, tiny_checkpoints["ast"]), out_dir=tmp_path / "cv")
    assert [row["fold"] for row in summary["folds"]] == [1, 2, 3]
    assert not list((tmp_path / "cv").glob("**/fold0"))


def test_sweep_fold_all_plans_the_manifest_folds(manifest, tmp_path, monkeypatch):
    import yaml

    from petl_kit.experiments.sweep import plan_sweep

    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # notebooks/ are found from here
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "experiment": "folds", "runner": "inprocess",
        "params": {"dataset": "csv", "data_path": str(manifest)},
        "grid": {"method": ["bitfit"], "fold": "all"},
    }))  # fmt: skip
    specs = plan_sweep(sweep)
    assert [s.protocol["fold"] for s in specs] == [1, 2, 3]
