"""Metrics against hand-computed values; losses; evaluate on a toy model."""

import math

import pytest
import torch
from torch import nn

from petl_kit.metrics import compute_metrics, evaluate, loss_fn, primary_metric


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
