"""Results machinery on hand-made run folders and tables: the tidy table, filters, mean ±
population std, the paper table, Markdown and LaTeX exports, provenance."""

import json
import math

import pandas as pd
import pytest
import yaml

from petl_kit.experiments import provenance
from petl_kit.experiments.report import export_table, to_latex, to_markdown, write_report
from petl_kit.experiments.results import (
    aggregate_results,
    collect_results,
    filter_results,
    paper_table,
    params_text,
)


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def fake_run(outputs, name, stamp, params, acc, *, n=100, protocol=None, commit="abc123",
             torch="2.11.0", status="completed"):  # fmt: skip
    run_dir = outputs / "exp" / f"{name}-20250101-{stamp}-abcd"
    run_dir.mkdir(parents=True)
    (run_dir / "params.yaml").write_text(yaml.safe_dump({"experiment": "exp", **params}))
    metrics = {"status": status, "method": params["method"], "dataset": params.get("dataset"),
               "task": "multiclass", "trainable_params": n, "train_seconds": 1.0,
               "test": {"accuracy": acc, "n": 10}, "val": {"accuracy": acc}}  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    ledger = {"flops": 1e6, "parameters": {"total": 5}, "inference": {"ms": 2.5}}
    (run_dir / "ledger.json").write_text(json.dumps(ledger))
    versions = {"petl_kit": "0.1.0", "git": {"commit": commit, "dirty": False}, "torch": torch,
                "device": "cpu", "seed": params.get("seed")}  # fmt: skip
    (run_dir / "versions.json").write_text(json.dumps(versions))
    if protocol is not None:
        (run_dir / "sweep.json").write_text(json.dumps({"key": name, "protocol": protocol}))
    return run_dir


def test_tidy_table_rows_hold_params_metrics_ledger_and_provenance(outputs):
    fake_run(outputs, "lora", "000001", {"method": "lora", "seed": 0, "lr": 0.01}, 0.5,
             protocol={"fold": 2})  # fmt: skip
    fake_run(outputs, "lora", "000002", {"method": "lora", "seed": 1, "lr": 0.01}, 0.7,
             commit="def456", torch="2.10.0")  # fmt: skip
    df = collect_results("exp")
    assert len(df) == 2
    row = df.iloc[0]
    assert (row["method"], row["seed"], row["lr"], row["fold"]) == ("lora", 0, 0.01, 2)
    assert (row["test_accuracy"], row["flops"], row["git_commit"]) == (0.5, 1e6, "abc123")
    assert row["inference_ms"] == 2.5 and "parameters_total" not in df
    assert (row["torch"], row["petl_kit"], row["device_name"]) == ("2.11.0", "0.1.0", "cpu")
    assert json.loads(row["config"]) == {"method": "lora", "lr": 0.01}  # no seed, fold, run_dir
    assert df.iloc[0]["config"] == df.iloc[1]["config"]  # repetitions of one setting

    assert list(filter_results(df, git_commit="abc")["seed"]) == [0]  # a short hash matches
    assert list(filter_results(df, torch="2.10.0")["seed"]) == [1]
    assert list(filter_results(df, seed=[0, "1"])["seed"]) == [0, 1]
    assert list(filter_results(df, lr="1e-2")["seed"]) == [0, 1]  # compared as numbers too
    assert list(filter_results(df.assign(seed=[0.0, None]), seed="0")["torch"]) == ["2.11.0"]
    assert filter_results(df, method="lora", torch="2.10.0", git_commit="abc").empty
    assert len(collect_results("exp", git_commit="def456")) == 1
    with pytest.raises(ValueError, match=r"no column\(s\) \['torchh'\]; columns: \[.*'torch'"):
        filter_results(df, torchh="2.11.0")


def test_aggregate_mean_population_std_and_n(outputs):
    # lora: 3 seeds × 2 folds; bitfit: one run, one failure, one rerun that replaces a run
    accs = {(0, 0): 0.5, (0, 1): 0.6, (1, 0): 0.7, (1, 1): 0.8, (2, 0): 0.9, (2, 1): 1.0}
    for i, ((seed, fold), acc) in enumerate(accs.items()):
        fake_run(outputs, "lora", f"0000{i:02d}", {"method": "lora", "seed": seed}, acc,
                 n=300, protocol={"fold": fold})  # fmt: skip
    fake_run(outputs, "bitfit", "000100", {"method": "bitfit", "seed": 0}, 0.2, n=50)
    fake_run(outputs, "bitfit", "000101", {"method": "bitfit", "seed": 0}, 0.4, n=50)  # rerun
    fake_run(outputs, "bitfit", "000102", {"method": "bitfit", "seed": 1}, 0.9, n=50,
             status="failed")  # fmt: skip
    agg = aggregate_results(collect_results("exp"))
    assert list(agg["label"]) == ["bitfit", "lora"]  # by trainable params
    bitfit, lora = agg.iloc[0], agg.iloc[1]
    assert bitfit["n"] == 1 and bitfit["test_accuracy"] == pytest.approx(0.4)
    assert bitfit["test_accuracy_std"] == 0.0  # one run: population std is 0, not NaN
    values = list(accs.values())
    mean = sum(values) / 6
    population = math.sqrt(sum((v - mean) ** 2 for v in values) / 6)  # ddof = 0
    assert lora["n"] == 6 and lora["test_accuracy"] == pytest.approx(0.75)
    assert lora["test_accuracy_std"] == pytest.approx(population)
    assert population == pytest.approx(0.170782, abs=1e-6)  # sample std would be 0.187083
    assert "test_n" not in agg and lora["trainable_params"] == 300


def test_crossval_folders_give_one_row_per_fold_and_episode(outputs):
    cv = outputs / "exp" / "cv-lora-20250101-000009-abcd"
    fs = outputs / "exp" / "fewshot-lora-20250101-000010-abcd"
    (fs / "k2" / "ep1").mkdir(parents=True)
    (cv).mkdir()
    runs = [(0.4, cv / "fold0"), (0.6, cv / "fold1"), (0.2, fs / "k2" / "ep1" / "fold0")]
    for i, (acc, target) in enumerate(runs):
        fake_run(outputs, "x", f"00000{i}", {"method": "lora", "seed": 10}, acc).rename(target)
    for folder, kind in ((cv, "cv"), (fs, "fewshot"), (fs / "k2", "fewshot")):
        # the drivers' aggregates are not runs themselves
        (folder / "metrics.json").write_text(json.dumps({"status": "completed", "kind": kind}))
    df = collect_results("exp")
    assert sorted(df["run_id"]) == ["cv-lora-20250101-000009-abcd:fold0",
                                    "cv-lora-20250101-000009-abcd:fold1",
                                    "fewshot-lora-20250101-000010-abcd:k2.ep1.fold0"]  # fmt: skip
    assert set(df["name"]) == {"cv-lora", "fewshot-lora"}
    shot = df[df["name"] == "fewshot-lora"].iloc[0]
    assert (shot["shots"], shot["episode"], shot["fold"]) == (2, 1, 0)
    agg = aggregate_results(df)
    assert agg["n"].tolist() == [2, 1] and agg["test_accuracy"].tolist() == pytest.approx(
        [0.5, 0.2]
    )
    assert agg["test_accuracy_std"].iloc[0] == pytest.approx(0.1)


def test_settings_sharing_a_method_get_labels():
    df = pd.DataFrame({
        "run_id": [f"lora-20250101-00000{i}-abcd" for i in range(4)],
        "name": "lora", "status": "completed", "method": "lora", "dataset": "esc50",
        "seed": [0, 1, 0, 1], "trainable_params": 10, "test_accuracy": [0.1, 0.3, 0.5, 0.9],
        "config": [json.dumps({"method": "lora", "lr": lr}) for lr in (0.01, 0.01, 0.1, 0.1)],
    })  # fmt: skip
    agg = aggregate_results(df)
    assert list(agg["label"]) == ["lora (lr=0.01)", "lora (lr=0.1)"]
    assert list(agg["test_accuracy_std"]) == pytest.approx([0.1, 0.2])


def test_a_setting_on_its_own_backbone_is_labelled_by_it():
    configs = [
        {"method": "linear", "backbone": "ast", "checkpoint": "builtin:tiny-ast", "lr": 0.01},
        {"method": "linear", "backbone": "wav2vec2", "checkpoint": "w2v", "lr": 0.01},
        {"method": "linear", "backbone": "wav2vec2", "checkpoint": "w2v", "lr": 0.1},
    ]
    df = pd.DataFrame({
        "run_id": [f"linear-20250101-00000{i}-abcd" for i in range(3)], "name": "linear",
        "status": "completed", "method": "linear", "dataset": "synthetic", "seed": 0,
        "trainable_params": 10, "test_accuracy": [0.3, 0.2, 0.1],
        "config": [json.dumps(c) for c in configs],
    })  # fmt: skip
    labels = sorted(aggregate_results(df)["label"])
    assert labels == ["linear (ast)", "linear (wav2vec2, lr=0.01)", "linear (wav2vec2, lr=0.1)"]


def test_paper_table_methods_by_datasets():
    agg = pd.DataFrame({
        "label": ["lora", "lora", "linear", "linear"],
        "method": ["lora", "lora", "linear", "linear"],
        "dataset": ["esc50", "us8k", "esc50", "us8k"], "task": "multiclass", "n": 5,
        "trainable_params": [150_000, 149_000, 38_000, 38_000],
        "test_accuracy": [0.9, 0.8, 0.7, 0.6], "test_accuracy_std": [0.01, 0.02, 0.0, 0.005],
    })  # fmt: skip
    table = paper_table(agg)
    assert list(table.columns) == ["method", "trainable params", "esc50", "us8k"]
    assert list(table["method"]) == ["linear", "lora"]
    assert table.iloc[0].tolist() == ["linear", "38.0K", "70.00 ± 0.00", "60.00 ± 0.50"]
    assert table.iloc[1]["trainable params"] == "149.0K–150.0K"  # the head differs per dataset
    assert table.iloc[1]["esc50"] == "90.00 ± 1.00"
    assert paper_table(agg, scale=1, digits=3).iloc[1]["us8k"] == "0.800 ± 0.020"
    with pytest.raises(ValueError, match="no column 'test_mAP'"):
        paper_table(agg, "test_mAP")
    assert [params_text(n) for n in (512, 4608, 12_345, 1_250_000)] == [
        "512", "4,608", "12.3K", "1.25M"
    ]  # fmt: skip


def test_markdown_and_latex_exports(tmp_path):
    df = pd.DataFrame({"method": ["lin_probe", "a|b"], "test_accuracy": [0.5, float("nan")],
                       "cell": ["70.00 ± 0.50", "–"]})  # fmt: skip
    assert to_markdown(df) == (
        "| method | test_accuracy | cell |\n"
        "|---|---:|---|\n"
        "| lin_probe | 0.5 | 70.00 ± 0.50 |\n"
        "| a\\|b | – | – |\n"
    )
    tex = to_latex(df, caption="Results")
    assert "\\begin{tabular}{lrl}" in tex and "\\caption{Results}" in tex
    assert "lin\\_probe" in tex and "test\\_accuracy" in tex  # escaped
    assert "70.00 $\\pm$ 0.50" in tex and "±" not in tex and "0.5 &" in tex
    paths = export_table(df, tmp_path / "t")
    assert {p.name for p in paths.values()} == {"t.csv", "t.md", "t.tex"}
    assert pd.read_csv(paths["csv"])["method"].tolist() == ["lin_probe", "a|b"]
    assert paths["md"].read_text() == to_markdown(df)


def test_report_files_and_filters(outputs):
    for i, (method, seed, acc, commit) in enumerate([
        ("linear", 0, 0.5, "abc1"), ("linear", 1, 0.7, "abc1"), ("lora", 0, 0.9, "abc1"),
        ("lora", 1, 0.1, "fff9"),
    ]):  # fmt: skip
        params = {"method": method, "seed": seed, "dataset": "synthetic"}
        fake_run(outputs, method, f"00000{i}", params, acc, n=100 if method == "linear" else 500,
                 commit=commit)  # fmt: skip
    paths = write_report("exp", git_commit="abc1")
    md = paths["md"].read_text()
    assert "Runs: 3 completed (filtered: git_commit=abc1)." in md
    assert "| lora | 500 | 0.900 | 1.0 |" in md  # the fff9 run is left out
    assert "0.600 ± 0.100 (n=2)" in md and "population std (ddof=0)" in md
    assert "Failed runs" not in md
    paper = pd.read_csv(paths["paper_table_csv"])
    assert paper.to_dict("list") == {"method": ["linear", "lora"], "trainable params": [100, 500],
                                     "synthetic": ["60.00 ± 10.00", "90.00"]}  # fmt: skip
    assert "\\begin{tabular}" in paths["paper_table_tex"].read_text()
    summary = pd.read_csv(paths["summary_csv"])
    assert summary["n"].tolist() == [2, 1] and "test_accuracy_std" in summary
    assert len(pd.read_csv(paths["csv"])) == 3 and paths["png"].is_file()
    assert paths["pareto"].name == "pareto.png" and paths["pareto"].is_file()


def test_versions_record_provenance():
    record = provenance.versions("cpu", seed=3)
    for key in ("petl_kit", "git", "python", "torch", "transformers", "numpy", "pandas",
                "papermill", "submitit", "device", "seed"):  # fmt: skip
        assert key in record, key
    assert record["device"] == "cpu" and record["seed"] == 3
    assert record["git"] is None or len(record["git"]["commit"]) == 40
