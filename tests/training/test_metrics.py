"""Metrics against hand-computed values; losses; evaluate on a toy model."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from petl_kit.training.metrics import (
    METRICS,
    aggregate_segments,
    compute_metrics,
    evaluate,
    loss_fn,
    primary_metric,
)
from petl_kit.training.music_tasks import (
    KEY_CLASSES,
    TEMPO_BINS,
    key_index,
    key_scores,
    tempo_accuracy,
    tempo_readout,
    tempo_target,
)


def one_hot_logits(pred, num_classes):
    return torch.nn.functional.one_hot(torch.tensor(pred), num_classes).float()


def test_accuracy_and_balanced_accuracy_on_an_imbalanced_case():
    # class 0: 6 examples, 5 right; class 1: 2 examples, 1 right; class 2: 2 examples, 0 right
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    pred = [0, 0, 0, 0, 0, 1, 1, 0, 0, 1]
    m = compute_metrics("multiclass", one_hot_logits(pred, 3), torch.tensor(labels))
    assert m["accuracy"] == pytest.approx(6 / 10)
    # UA = mean per-class recall = (5/6 + 1/2 + 0) / 3
    assert m["balanced_accuracy"] == pytest.approx((5 / 6 + 1 / 2 + 0) / 3)
    assert set(m) == {"accuracy", "balanced_accuracy"}


def test_perfect_multiclass_and_numpy_inputs():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]])
    m = compute_metrics("multiclass", logits.numpy(), [0, 1, 0])
    assert m == {"accuracy": 1.0, "balanced_accuracy": 1.0}


def test_map_and_roc_auc_against_hand_values():
    # class 0: scores (.9 +, .8 -, .7 +, .1 -): AP = (1/1 + 2/3) / 2 = 5/6; AUC = 3/4
    # class 1: scores (.2 -, .6 +, .4 -, .3 +): AP = (1/1 + 2/3) / 2 = 5/6; AUC = 3/4
    scores = torch.tensor([[0.9, 0.2], [0.8, 0.6], [0.7, 0.4], [0.1, 0.3]])
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.float32)
    m = compute_metrics("multilabel", scores, labels)
    assert m["mAP"] == pytest.approx(5 / 6)
    assert m["roc_auc"] == pytest.approx(3 / 4)
    # logits (before sigmoid) rank the same: identical metrics
    m_logits = compute_metrics("multilabel", torch.logit(scores), labels)
    assert m_logits == pytest.approx(m)


def test_multilabel_skips_classes_without_positives_or_negatives():
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.6, 0.3]])
    labels = torch.tensor([[1, 1, 0], [0, 1, 0]])  # class 1 all positive, class 2 no positive
    m = compute_metrics("multilabel", scores, labels)
    assert m["mAP"] == pytest.approx((1.0 + 1.0) / 2)  # classes 0 and 1
    assert m["roc_auc"] == pytest.approx(1.0)  # class 0 only


def test_empty_input_gives_nan_and_shape_errors_name_the_problem():
    m = compute_metrics("multiclass", torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert math.isnan(m["accuracy"])
    with pytest.raises(ValueError, match="3 rows of logits but 2 labels"):
        compute_metrics("multiclass", torch.zeros(3, 2), [0, 1])
    with pytest.raises(ValueError, match="multi-hot"):
        compute_metrics("multilabel", torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="unknown task 'regression'.*multiclass"):
        compute_metrics("regression", torch.zeros(2, 2), [0, 1])


def test_primary_metric_and_loss():
    assert primary_metric("multiclass") == "accuracy"
    assert primary_metric("multilabel") == "mAP"
    logits = torch.tensor([[2.0, -1.0]])
    ce = loss_fn("multiclass")(logits, torch.tensor([0]))
    assert ce.item() == pytest.approx(-torch.log_softmax(logits, 1)[0, 0].item())
    bce = loss_fn("multilabel")(logits, torch.tensor([[1.0, 0.0]]))
    expected = -(
        torch.log(torch.sigmoid(logits[0, 0])) + torch.log(1 - torch.sigmoid(logits[0, 1]))
    )
    assert bce.item() == pytest.approx(expected.item() / 2)


class Toy(nn.Module):
    """Logits = the first C features; records whether it saw an attention mask."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.saw_mask = False

    def forward(self, x, attention_mask=None):
        self.saw_mask = attention_mask is not None
        return self.w * x[:, :3]


def test_evaluate_restores_mode_and_returns_outputs():
    x = torch.eye(3).repeat(2, 1)  # predicts 0, 1, 2, 0, 1, 2
    batches = [
        {"input_values": x[:4], "labels": torch.tensor([0, 1, 2, 1]), "index": torch.arange(4),
         "attention_mask": torch.ones(4, 3, dtype=torch.long)},
        {"input_values": x[4:], "labels": torch.tensor([1, 2]), "index": torch.arange(4, 6),
         "attention_mask": torch.ones(2, 3, dtype=torch.long)},
    ]  # fmt: skip
    model = Toy().train()
    metrics, out = evaluate(model, batches, "multiclass", "cpu", return_outputs=True)
    assert model.training and model.saw_mask
    assert metrics["accuracy"] == pytest.approx(5 / 6) and metrics["n"] == 6
    expected = nn.functional.cross_entropy(x, torch.tensor([0, 1, 2, 1, 1, 2])).item()
    assert metrics["loss"] == pytest.approx(expected)
    assert out["logits"].shape == (6, 3) and out["index"].tolist() == list(range(6))
    with pytest.raises(ValueError, match="no batch"):
        evaluate(model, [], "multiclass")


# ---------------------------------------------------------------------------- key and tempo
# reference C major (0): C major, G major (fifth above), F major (fifth below), A minor
# (relative), C minor (parallel), D major (other)
KEY_CASES = [0, 7, 5, 21, 12, 2]


def test_key_scores_by_relation_ascending_and_symmetric():
    ascending = key_scores([0] * 6, KEY_CASES, "ascending")
    assert ascending.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    symmetric = key_scores([0] * 6, KEY_CASES, "symmetric")
    assert symmetric.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.3, 0.2, 0.0])
    # reference A minor (21): C major is its relative major (0.3), E minor a fifth above (0.5),
    # D minor a fifth below (0 / 0.5), A major parallel (0.2)
    ref = [21] * 4
    est = [0, 16, 14, 9]
    assert key_scores(ref, est).tolist() == pytest.approx([0.3, 0.5, 0.0, 0.2])
    assert key_scores(ref, est, "symmetric").tolist() == pytest.approx([0.3, 0.5, 0.5, 0.2])
    assert KEY_CLASSES[key_index(9, "minor")] == "A minor" and key_index(7, 0) == 7
    with pytest.raises(ValueError, match="fifths='both'.*ascending"):
        key_scores([0], [0], "both")
    with pytest.raises(ValueError, match="key index 24"):
        key_scores([24], [0])


def test_key_metrics_from_logits():
    logits = one_hot_logits(KEY_CASES, 24)
    m = compute_metrics("key", logits, torch.zeros(6, dtype=torch.long))
    assert m["key_weighted_ascending"] == pytest.approx((1.0 + 0.5 + 0.3 + 0.2) / 6)
    assert m["key_weighted_symmetric"] == pytest.approx((1.0 + 0.5 + 0.5 + 0.3 + 0.2) / 6)
    assert m["accuracy"] == pytest.approx(1 / 6)
    assert list(m) == list(METRICS["key"]) and primary_metric("key") == "key_weighted_ascending"
    # balanced accuracy (the music reference's "acc"): class 0 all right, class 7 all wrong
    m = compute_metrics("key", one_hot_logits([0, 0, 0, 0], 24), [0, 0, 0, 7])
    assert m["accuracy"] == pytest.approx(0.75) and m["balanced_accuracy"] == pytest.approx(0.5)


def test_tempo_target_and_losses():
    target = tempo_target(torch.tensor([120, 1]))
    assert target.shape == (2, TEMPO_BINS)
    assert target[0, 118:123].tolist() == [0.5, 0.5, 1.0, 0.5, 0.5] and target[0].sum() == 3.0
    assert target[1, :4].tolist() == [0.5, 1.0, 0.5, 0.5] and target[1].sum() == 2.5  # clipped
    logits = torch.randn(2, TEMPO_BINS, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([120, 1])
    ce = loss_fn("tempo")(logits, labels)
    normalised = target / target.sum(1, keepdim=True)
    expected = -(normalised * torch.log_softmax(logits, 1)).sum(1).mean()
    assert ce.item() == pytest.approx(expected.item(), rel=1e-6)
    bce = loss_fn("tempo", tempo_loss="bce")(logits, labels)
    expected = nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert bce.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="tempo_loss='mse'.*softmax_ce"):
        loss_fn("tempo", tempo_loss="mse")
    with pytest.raises(ValueError, match="tempo label 300 BPM"):
        tempo_target(torch.tensor([300]))


def test_tempo_readout_finds_the_labelled_bpm_and_refines_between_bins():
    probs = torch.softmax(8 * tempo_target(torch.tensor([97, 150, 60])), 1).numpy()
    assert tempo_readout(probs) == pytest.approx([97.0, 150.0, 60.0], abs=1e-3)
    # two equal neighbouring bins: the interpolated peak lies half-way
    two = np.zeros((1, TEMPO_BINS))
    two[0, 100:102] = 1.0
    assert tempo_readout(two)[0] == pytest.approx(100.5, abs=2e-3)
    # bins below 10 BPM are ignored; a flat curve falls back to the argmax (no error)
    low = np.zeros((1, TEMPO_BINS))
    low[0, 5], low[0, 200] = 10.0, 1.0
    assert tempo_readout(low)[0] == pytest.approx(200.0, abs=1e-3)
    assert np.isfinite(tempo_readout(np.ones((1, TEMPO_BINS)))).all()


def test_tempo_accuracy_tolerance_and_octave_errors():
    ref = [100.0] * 6
    est = [100.0, 104.0, 105.0, 200.0, 33.4, 150.0]
    # 4 % inclusive; 5 % off; double and a third count for Acc2 only; 3/2 never
    assert tempo_accuracy(est, ref) == pytest.approx({"acc1": 2 / 6, "acc2": 4 / 6})
    # the spec's unit checks through compute_metrics: one-hot at the label, 1.05×, 2×
    labels = torch.tensor([100, 100, 100])
    logits = 20 * one_hot_logits([100, 105, 200], TEMPO_BINS)
    per_item = [compute_metrics("tempo", logits[i : i + 1], labels[i : i + 1]) for i in range(3)]
    assert per_item == [{"acc1": 1.0, "acc2": 1.0}, {"acc1": 0.0, "acc2": 0.0},
                        {"acc1": 0.0, "acc2": 1.0}]  # fmt: skip
    assert primary_metric("tempo") == "acc1"


def test_segment_aggregation_means_probabilities_per_clip():
    # clip 0: two segments, clip 1: one; clip 2's segments disagree, the mean decides
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [4.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    clip_index = torch.tensor([0, 0, 1, 2, 2])
    probs, clip_labels, clips = aggregate_segments("multiclass", logits, labels, clip_index)
    soft = torch.softmax(logits, 1)
    assert torch.allclose(probs[0], soft[:2].mean(0)) and torch.allclose(probs[2], soft[3:].mean(0))
    assert clip_labels.tolist() == [0, 1, 1] and clips.tolist() == [0, 1, 2]
    sig, _, _ = aggregate_segments("key", logits, labels, clip_index, "mean_sigmoid")
    assert torch.allclose(sig[1], torch.sigmoid(logits[2]))
    with pytest.raises(ValueError, match="aggregate='max'.*mean_prob"):
        aggregate_segments("key", logits, labels, clip_index, "max")


def test_evaluate_aggregates_segments_to_clips():
    x = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0],
                      [0.0, 5.0, 0.0]])  # fmt: skip
    batch = {"input_values": x, "labels": torch.tensor([0, 0, 1, 1, 1]),
             "index": torch.arange(5), "clip_index": torch.tensor([0, 0, 1, 2, 2])}  # fmt: skip
    metrics, out = evaluate(Toy(), [batch], "multiclass", "cpu", return_outputs=True)
    # clip 2: softmax means favour class 1 (5 > 4), so all three clips are right
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 3 and metrics["segments"] == 5
    assert out["clip_probs"].shape == (3, 3) and out["logits"].shape == (5, 3)
    expected = nn.functional.cross_entropy(x, batch["labels"]).item()
    assert metrics["loss"] == pytest.approx(expected)
