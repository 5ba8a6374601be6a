"""The training loop: config, optimizer groups, schedule, selection, determinism."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import petl_kit as pk
from petl_kit.config import ConfigError, build
from petl_kit.data import Clip, DatasetSplits, collate
from petl_kit.training.metrics import METRICS, primary_metric
from petl_kit.training.music_tasks import KEY_CLASSES, TEMPO_CLASSES
from petl_kit.training.train import (
    TrainConfig,
    fit,
    lr_factor,
    make_loaders,
    make_optimizer,
    pick_device,
)


def cfg_of(**values):
    return build(TrainConfig, {"progress": False, "device": "cpu", **values})


def tiny(method="linear", seed=0, num_classes=3):
    # 32 frames x 32 mels: a 2 x 2 patch grid, so the runs take well under a second
    config = pk.tiny_config("ast", max_length=32, num_mel_bins=32)
    return pk.build_model(backbone="ast", backbone_config=config, num_classes=num_classes,
                          method=method, seed=seed)  # fmt: skip


def fbank_loaders(seed=0, n=(24, 12, 12), batch_size=8):
    """Class-dependent random fbanks [L=32, F=32] (class c lifts mel rows 10c..10c+10)."""
    g = torch.Generator().manual_seed(123)
    out = {}
    for offset, (split, size) in enumerate(zip(("train", "val", "test"), n, strict=True)):
        items = []
        for i in range(size):
            label = i % 3
            x = 0.3 * torch.randn(32, 32, generator=g)
            x[:, 10 * label : 10 * label + 10] += 1.0
            items.append({"input_values": x, "label": label, "index": i})
        out[split] = DataLoader(items, batch_size=batch_size, shuffle=split == "train",
                                collate_fn=collate,
                                generator=torch.Generator().manual_seed(seed + offset))  # fmt: skip
    return out


def no_time(history):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


# ---------------------------------------------------------------- config
def test_config_profiles_and_errors():
    assert cfg_of().select == "best_val" and cfg_of().deterministic is True
    ref = build(TrainConfig, {}, "reference")
    assert ref.select == "last" and ref.deterministic is False
    assert TrainConfig().select == "best_val"  # direct construction fills profile options
    assert (ref.epochs, ref.weight_decay, ref.betas, ref.eps, ref.seed) == (
        10,
        0.1,
        (0.9, 0.98),
        1e-6,
        10,
    )
    with pytest.raises(ConfigError, match="unknown TrainConfig key.*'epoch'.*valid keys"):
        build(TrainConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match="TrainConfig.select.*'last' \\| 'best_val'"):
        build(TrainConfig, {"select": "best"})
    with pytest.raises(ConfigError, match="TrainConfig.lr = -0.1"):
        build(TrainConfig, {"lr": -0.1})
    with pytest.raises(ConfigError, match="TrainConfig.betas"):
        build(TrainConfig, {"betas": [0.9]})


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="'gpu0'"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")


# ---------------------------------------------------------------- optimizer and schedule
def test_cosine_schedule_endpoints():
    model, total = tiny(), 10
    opt, sched = make_optimizer(model, cfg_of(lr=0.01), total_steps=total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[total // 2] == pytest.approx(0.005)
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    c = cfg_of(lr=0.01, min_lr=0.001, warmup_steps=4)
    assert lr_factor(total // 2, total, c, 0.01) * 0.01 == pytest.approx(0.0055)
    assert lr_factor(0, total, c, 0.01) == pytest.approx(0.25 * 1.0)  # warm-up (0 + 1) / 4
    assert lr_factor(50, total, c, 0.01) * 0.01 == pytest.approx(0.001)  # min_lr past the end
    assert lr_factor(7, total, cfg_of(schedule="constant"), 0.01) == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        make_optimizer(model, cfg_of())


def test_head_group_lr_and_method_default_lr():
    model = tiny("linear")
    opt, _ = make_optimizer(model, cfg_of(lr=1e-3, head_lr=1e-2), total_steps=5)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"body", "head"}  # linear probing: final LN + head
    assert groups["body"]["lr"] == 1e-3 and groups["head"]["lr"] == 1e-2
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in model.head.parameters()}
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)  # R29: decay everything
    opt, _ = make_optimizer(tiny("bitfit"), cfg_of(), total_steps=5)
    assert {g["lr"] for g in opt.param_groups} == {5e-3}  # the method's reference LR
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.98)
    assert opt.defaults["eps"] == 1e-6


def test_only_trainable_parameters_are_optimized():
    model = tiny("bitfit")
    opt, _ = make_optimizer(model, cfg_of(wd_exclude_norm_bias=True), total_steps=5)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_opt == trainable and len(trainable) < len(list(model.parameters()))
    groups = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert groups == {"body_no_decay": 0.0, "head": 0.1, "head_no_decay": 0.0}


# ---------------------------------------------------------------- selection
class Flip(nn.Module):
    """A linear classifier on one-hot inputs that starts right on val/test and is trained on
    flipped labels: val accuracy is best after epoch 1 and falls afterwards."""

    task, method = "multiclass", "linear"

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(3 * torch.eye(2))
        self.register_buffer("petl_count", torch.zeros(()))  # an injected buffer, like BN stats

    def forward(self, x):
        if self.training:
            self.petl_count += 1
        return self.head(x)

    def trainable_state_dict(self):
        return {"head.weight": self.head.weight.detach(), "petl_count": self.petl_count.detach()}


def flip_loaders(with_val=True):
    x = torch.eye(2).repeat(4, 1)
    y = torch.tensor([0, 1] * 4)
    batch = lambda labels: [{"input_values": x, "labels": labels, "index": torch.arange(8)}]  # noqa: E731
    loaders = {"train": batch(1 - y), "test": batch(y)}
    if with_val:
        loaders["val"] = batch(y)
    return loaders


@pytest.mark.parametrize("select", ["best_val", "last"])
def test_best_val_keeps_a_deep_copy_of_the_best_epoch(select):
    model, states = Flip(), {}

    def record(row):
        states[row["epoch"]] = {k: v.clone() for k, v in model.trainable_state_dict().items()}

    cfg = cfg_of(epochs=6, lr=1.0, weight_decay=0.0, schedule="constant", select=select)
    result = fit(model, flip_loaders(), cfg, on_epoch=record)
    assert result.best_epoch == 1
    assert [r["val_accuracy"] for r in result.history][0] == 1.0
    assert result.history[-1]["val_accuracy"] == 0.0
    assert result.test_best_val["accuracy"] == 1.0 and result.test_last["accuracy"] == 0.0
    chosen = 1 if select == "best_val" else 6
    assert result.selected_epoch == chosen and result.select == select
    assert result.test == (result.test_best_val if select == "best_val" else result.test_last)
    assert result.val["accuracy"] == result.history[chosen - 1]["val_accuracy"]
    for k, v in model.trainable_state_dict().items():  # the model holds the selected weights
        torch.testing.assert_close(v, states[chosen][k], rtol=0, atol=0)


def test_no_val_split_falls_back_to_last_with_a_note():
    result = fit(Flip(), flip_loaders(with_val=False), cfg_of(epochs=2, lr=1.0))
    assert result.select == "last" and result.best_epoch is None and result.test_best_val == {}
    assert result.test == result.test_last and "no 'val' loader" in result.notes[0]
    assert "val_loss" not in result.history[0]


# ---------------------------------------------------------------- real model runs
def test_fit_records_history_and_is_deterministic():
    runs = [fit(tiny("bitfit"), fbank_loaders(), cfg_of(epochs=2)) for _ in range(2)]
    a, b = runs
    assert no_time(a.history) == no_time(b.history)
    assert a.test == b.test and a.steps == b.steps == 6
    row = a.history[0]
    assert set(row) == {"epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                        "val_balanced_accuracy", "epoch_seconds"}  # fmt: skip
    assert row["lr"] == 5e-3 and a.lr == a.head_lr == 5e-3
    assert a.peak_memory_kind in ("process_peak_rss", "cuda_max_allocated")
    assert a.peak_memory_mb > 0 and a.examples_per_second > 0 and a.device == "cpu"
    assert set(a.to_dict()) >= {"history", "test", "test_last", "test_best_val", "train_seconds"}


def test_bf16_trains_on_cpu_and_frozen_weights_stay():
    model = tiny("linear")
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    on = fit(model, fbank_loaders(), cfg_of(epochs=1, precision="bf16"))
    off = fit(tiny("linear"), fbank_loaders(), cfg_of(epochs=1, precision="fp32"))
    assert on.precision == "bf16" and off.precision == "fp32"
    assert no_time(on.history) != no_time(off.history)  # the autocast acts on CPU too
    assert all(math.isfinite(r["train_loss"]) for r in on.history)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_multilabel_uses_bce_and_map():
    model = tiny("linear", num_classes=3)
    model.task = "multilabel"
    loaders = fbank_loaders(n=(12, 6, 6))
    for loader in loaders.values():  # multi-hot targets: class c plus class (c + 1) % 3
        for item in loader.dataset:
            c = item["label"] if isinstance(item["label"], int) else int(item["label"].argmax())
            item["label"] = torch.zeros(3)
            item["label"][[c, (c + 1) % 3]] = 1.0
    result = fit(model, loaders, cfg_of(epochs=1))
    assert {"train_mAP", "val_mAP", "val_roc_auc"} <= set(result.history[0])
    assert 0.0 <= result.test["mAP"] <= 1.0


# ---------------------------------------------------------------- music tasks, segments
def test_music_options_follow_the_profile():
    ref, cor = build(TrainConfig, {}, "reference"), cfg_of()
    assert (ref.val_crop, ref.segment_aggregate, ref.tempo_loss) == (
        "random",
        "mean_sigmoid",
        "bce",
    )
    assert (cor.val_crop, cor.segment_aggregate, cor.tempo_loss) == ("segments", "mean_prob",
                                                                     "softmax_ce")  # fmt: skip
    assert cor.train_crop is None and cor.eval_segment is None
    with pytest.raises(ConfigError, match="TrainConfig.train_crop = 0"):
        cfg_of(train_crop=0)
    with pytest.raises(ConfigError, match="TrainConfig.val_crop.*'random' \\| 'segments'"):
        cfg_of(val_crop="center")


def clip_splits(task, classes, labels, seconds=1.0, seed=0):
    """In-memory 16-kHz clips, one per label of each split: noise whose loudness encodes the
    label's parity, enough for a few steps of learning."""
    rng = np.random.default_rng(seed)
    parts = {}
    for split, labs in labels.items():
        parts[split] = [
            Clip((0.1 + 0.4 * (lab % 2)) * rng.standard_normal(int(16000 * seconds)), lab, 16000)
            for lab in labs
        ]
    return DatasetSplits(task, list(classes), task, **parts)


@pytest.mark.parametrize("task", ["key", "tempo"])
def test_fit_on_segments_reports_clip_level_metrics(task):
    classes = KEY_CLASSES if task == "key" else TEMPO_CLASSES
    labels = [0, 7, 12, 21] if task == "key" else [60, 90, 120, 121]
    splits = clip_splits(task, classes, {"train": labels * 2, "val": labels, "test": labels})
    model = tiny("linear", num_classes=len(classes))
    model.task = task
    cfg = cfg_of(epochs=2, batch_size=4, train_crop=5000, eval_segment=5000)
    loaders = make_loaders(model, splits, cfg)
    assert len(loaders["train"].dataset) == 8 and len(loaders["test"].dataset) == 4 * 3
    result = fit(model, loaders, cfg)
    metrics = set(METRICS[task])
    assert metrics <= set(result.test) and metrics <= set(result.val)
    assert result.test["n"] == 4 and result.test["segments"] == 12
    assert f"val_{primary_metric(task)}" in result.history[0]
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    if task == "tempo":  # the loss is the widened-target CE, not plain CE
        assert result.history[0]["train_loss"] > 0


def test_reference_val_crop_gives_one_random_crop_per_val_clip():
    splits = clip_splits("key", KEY_CLASSES, {"train": [0, 1], "val": [2, 3], "test": [4]})
    model = tiny("linear", num_classes=24)
    cfg = cfg_of(train_crop=4000, eval_segment=5000, val_crop="random")
    loaders = make_loaders(model, splits, cfg)
    assert len(loaders["val"].dataset) == 2 and len(loaders["test"].dataset) == 3
    assert "clip_index" not in next(iter(loaders["val"]))
    assert next(iter(loaders["test"]))["clip_index"].tolist() == [0, 0, 0]
