"""Task metrics and losses (computed with scikit-learn), and ``evaluate``: a model's metrics on a
data loader.

Multiclass (ESC-50, US8K, GSC, FSC, IEMOCAP, synthetic): ``accuracy`` (fraction correct, also
IEMOCAP's WA) and ``balanced_accuracy`` (mean per-class recall = IEMOCAP's UA).
Multilabel (music tagging): ``mAP`` (macro average precision) and ``roc_auc`` (macro ROC-AUC),
as the music PETL paper logs ``{split}/mAP`` and ``{split}/ROC-AUC``.

All values are plain floats; accuracies are fractions in [0, 1], not percentages.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
)
from torch import nn

TASKS = ("multiclass", "multilabel")
_PRIMARY = {"multiclass": "accuracy", "multilabel": "mAP"}


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def primary_metric(task: str) -> str:
    """The metric that model selection maximises: ``'accuracy'`` (multiclass) | ``'mAP'``."""
    return _PRIMARY[_check_task(task)]


def loss_fn(task: str) -> nn.Module:
    """``CrossEntropyLoss`` (multiclass, long targets ``[N]``) or ``BCEWithLogitsLoss``
    (multilabel, float multi-hot targets ``[N, C]``); mean over the batch, no label smoothing or
    class weights (as both references)."""
    return nn.CrossEntropyLoss() if _check_task(task) == "multiclass" else nn.BCEWithLogitsLoss()


def _numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()
    return np.asarray(x)


def _macro_over_defined(score, y_true: np.ndarray, y_score: np.ndarray, need_negatives: bool):
    """Macro average of ``score`` over the classes where it is defined.

    A class with no positive in ``y_true`` has no average precision, and one with no negative has
    no ROC-AUC; sklearn would warn and count it as 0 (AP) or raise (ROC-AUC). Small validation
    splits of tagging sets routinely miss rare tags, so such classes are left out of the mean (the
    usual practice in AudioSet / MTAT evaluation). NaN when no class qualifies.
    """
    positives = y_true.sum(0)
    keep = positives > 0
    if need_negatives:
        keep &= positives < y_true.shape[0]
    if not keep.any():
        return float("nan")
    return float(score(y_true[:, keep], y_score[:, keep], average="macro"))


def compute_metrics(
    task: str, logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | Sequence
) -> dict[str, float]:
    """Metrics of one split.

    Args:
        task: ``'multiclass'`` | ``'multilabel'``.
        logits: ``[N, C]`` raw model outputs (before softmax / sigmoid).
        labels: ``[N]`` class indices (multiclass) or ``[N, C]`` multi-hot 0/1 (multilabel).

    Returns:
        multiclass: ``{'accuracy', 'balanced_accuracy'}``;
        multilabel: ``{'mAP', 'roc_auc'}`` (macro over the classes where each is defined, see
        :func:`_macro_over_defined`). Empty inputs give NaN for every metric.
    """
    _check_task(task)
    scores, y = _numpy(logits), _numpy(labels)
    if scores.ndim != 2:
        raise ValueError(f"compute_metrics: logits must be [N, C], got shape {scores.shape}")
    if len(y) != len(scores):
        raise ValueError(
            f"compute_metrics: {len(scores)} rows of logits but {len(y)} labels; they must match"
        )
    names = ("accuracy", "balanced_accuracy") if task == "multiclass" else ("mAP", "roc_auc")
    if len(y) == 0:
        return dict.fromkeys(names, float("nan"))
    if task == "multiclass":
        if y.ndim != 1:
            raise ValueError(f"compute_metrics: multiclass labels must be [N], got shape {y.shape}")
        pred = scores.argmax(1)
        with warnings.catch_warnings():
            # "y_pred contains classes not in y_true" is expected on small splits
            warnings.simplefilter("ignore", UserWarning)
            balanced = balanced_accuracy_score(y, pred)
        return {"accuracy": float(accuracy_score(y, pred)), "balanced_accuracy": float(balanced)}
    if y.shape != scores.shape:
        raise ValueError(
            f"compute_metrics: multilabel labels must be multi-hot [N, C] = {scores.shape}, "
            f"got shape {y.shape}"
        )
    y = (y > 0.5).astype(np.int64)
    # AP and ROC-AUC depend only on the ranking, so logits serve as scores (no sigmoid needed)
    return {
        "mAP": _macro_over_defined(average_precision_score, y, scores, need_negatives=False),
        "roc_auc": _macro_over_defined(roc_auc_score, y, scores, need_negatives=True),
    }


def forward_batch(model: nn.Module, batch: dict, device: torch.device, bf16: bool = False):
    """Run ``model`` on one ``data.collate`` batch.

    Passes ``attention_mask`` when the batch has one (waveform models). ``bf16`` autocasts on
    CUDA only: CPU bf16 autocast is slow and neither reference ran it.

    Returns ``(logits [B, C] float32, targets on device)``: targets are long ``[B]`` (multiclass)
    or float multi-hot ``[B, C]`` (multilabel), as :func:`loss_fn` expects.
    """
    inputs, mask = batch["input_values"].to(device), batch.get("attention_mask")
    amp = torch.autocast("cuda", torch.bfloat16) if bf16 and device.type == "cuda" else None
    with amp or nullcontext():
        logits = model(inputs, mask.to(device)) if mask is not None else model(inputs)
    labels = batch["labels"].to(device)
    return logits.float(), labels.float() if labels.dim() == 2 else labels.long()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict],
    task: str,
    device: torch.device | str | None = None,
    *,
    bf16: bool = False,
    return_outputs: bool = False,
):
    """Metrics of ``model`` on ``loader`` in eval mode, without gradients (the model's previous
    train/eval mode is restored). ``device`` defaults to where the model's parameters are.

    Returns ``{**compute_metrics(task, ...), 'loss': mean per-example loss, 'n': examples}``;
    with ``return_outputs=True`` also ``{'logits' [N, C], 'labels', 'index' [N]}`` (CPU; index
    is -1 where batches carry none).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    criterion, was_training = loss_fn(task), model.training
    model.eval()
    out: dict[str, list] = {"logits": [], "labels": [], "index": []}
    total = 0.0
    try:
        for batch in loader:
            logits, target = forward_batch(model, batch, device, bf16)
            total += criterion(logits, target).item() * len(logits)
            out["logits"].append(logits.cpu())
            out["labels"].append(batch["labels"].cpu())
            out["index"].append(batch.get("index", torch.full((len(logits),), -1)).cpu())
    finally:
        model.train(was_training)
    if not out["logits"]:
        raise ValueError("evaluate: the loader yielded no batch")
    outputs = {k: torch.cat(v) for k, v in out.items()}
    n = len(outputs["logits"])
    metrics = compute_metrics(task, outputs["logits"], outputs["labels"])
    metrics.update(loss=total / n, n=n)
    return (metrics, outputs) if return_outputs else metrics
