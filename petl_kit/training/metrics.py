"""Task metrics and losses (scikit-learn, mir_eval), and ``evaluate``: a model's metrics on a
data loader, with clip-level aggregation of segment outputs.

Multiclass (ESC-50, US8K, GSC, FSC, IEMOCAP, synthetic): ``accuracy`` (fraction correct, also
IEMOCAP's WA) and ``balanced_accuracy`` (mean per-class recall = IEMOCAP's UA).
Multilabel (music tagging): ``mAP`` (macro average precision) and ``roc_auc`` (macro ROC-AUC),
as the music PETL paper logs ``{split}/mAP`` and ``{split}/ROC-AUC``.
Key (24 classes, ``music_tasks``): ``accuracy``, ``balanced_accuracy`` (the music reference's
"acc", M14), ``key_weighted_ascending`` (MIREX / mir_eval) and ``key_weighted_symmetric`` (M15).
Tempo (300 BPM bins, label = integer BPM): ``acc1`` (±4 %) and ``acc2`` (octave errors allowed).

All values are plain floats; accuracies are fractions in [0, 1], not percentages.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import TASKS
from .music_tasks import TEMPO_LOSSES, TempoLoss, key_scores, tempo_accuracy, tempo_readout
from .precision import autocast

# Every metric compute_metrics returns per task; the first is what model selection maximises
# (key: the MIREX score, tempo: Acc1, as the music recipe of training.md §2.7).
METRICS = {
    "multiclass": ("accuracy", "balanced_accuracy"),
    "multilabel": ("mAP", "roc_auc"),
    "key": ("key_weighted_ascending", "key_weighted_symmetric", "accuracy", "balanced_accuracy"),
    "tempo": ("acc1", "acc2"),
}
# Clip-level aggregation of segment outputs: 'mean_prob' = mean of the task's probabilities
# (softmax; sigmoid for multilabel); 'mean_sigmoid' = the music reference's sigmoid for every
# task (M13)
AGGREGATES = ("mean_prob", "mean_sigmoid")


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def primary_metric(task: str) -> str:
    """The metric that model selection maximises: ``'accuracy'`` (multiclass), ``'mAP'``
    (multilabel), ``'key_weighted_ascending'`` (key), ``'acc1'`` (tempo)."""
    return METRICS[_check_task(task)][0]


def loss_fn(task: str, *, tempo_loss: str = "softmax_ce") -> nn.Module:
    """The task's training loss, mean over the batch, no label smoothing or class weights.

    multiclass, key: ``CrossEntropyLoss`` (long targets ``[N]``); multilabel:
    ``BCEWithLogitsLoss`` (float multi-hot ``[N, C]``); tempo: :class:`TempoLoss` (integer BPM
    ``[N]``) of kind ``tempo_loss`` (``'softmax_ce'`` | ``'bce'``).
    """
    task = _check_task(task)
    if tempo_loss not in TEMPO_LOSSES:
        raise ValueError(f"tempo_loss={tempo_loss!r} is not valid; valid: {list(TEMPO_LOSSES)}")
    if task == "multilabel":
        return nn.BCEWithLogitsLoss()
    return TempoLoss(tempo_loss) if task == "tempo" else nn.CrossEntropyLoss()


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
    task: str,
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence,
    *,
    probabilities: bool = False,
) -> dict[str, float]:
    """Metrics of one split.

    Args:
        task: one of :data:`TASKS`.
        logits: ``[N, C]`` raw model outputs (before softmax / sigmoid), or probabilities (e.g.
            segment means) with ``probabilities=True``. Only tempo's read-out reads the values
            themselves (a softmax turns logits into probabilities); the other metrics use the
            argmax or the ranking.
        labels: ``[N]`` class indices (multiclass, key), integer BPM (tempo) or ``[N, C]``
            multi-hot 0/1 (multilabel).

    Returns:
        ``{name: value}`` for the names of ``METRICS[task]``. Multilabel values are the macro mean
        over the classes where each is defined (see :func:`_macro_over_defined`), and
        ``mAP_tags_dropped`` (an int) says how many tags had no positive and so no AP. Empty
        inputs give NaN for every metric.
    """
    _check_task(task)
    scores, y = _numpy(logits), _numpy(labels)
    if scores.ndim != 2:
        raise ValueError(f"compute_metrics: logits must be [N, C], got shape {scores.shape}")
    if len(y) != len(scores):
        raise ValueError(
            f"compute_metrics: {len(scores)} rows of logits but {len(y)} labels; they must match"
        )
    if len(y) == 0:
        return dict.fromkeys(METRICS[task], float("nan"))
    if task != "multilabel" and y.ndim != 1:
        raise ValueError(f"compute_metrics: {task} labels must be [N], got shape {y.shape}")
    if task == "tempo":
        probs = scores if probabilities else torch.softmax(torch.from_numpy(scores), -1).numpy()
        return tempo_accuracy(tempo_readout(probs), y)
    # imported here: every `import petl_kit` reaches TASKS above, few need scikit-learn
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        roc_auc_score,
    )

    if task in ("multiclass", "key"):
        pred = scores.argmax(1)
        with warnings.catch_warnings():
            # "y_pred contains classes not in y_true" is expected on small splits
            warnings.simplefilter("ignore", UserWarning)
            balanced = balanced_accuracy_score(y, pred)
        out = {"accuracy": float(accuracy_score(y, pred)), "balanced_accuracy": float(balanced)}
        if task == "key":
            for fifths in ("ascending", "symmetric"):
                out[f"key_weighted_{fifths}"] = float(key_scores(y, pred, fifths).mean())
        return {name: out[name] for name in METRICS[task]}
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
        # how many tags the mAP left out (no positive in this split): a mean over 40 of 50
        # tags is not the paper's mean over 50
        "mAP_tags_dropped": int((y.sum(0) == 0).sum()),
    }


def clip_probabilities(task: str, logits: torch.Tensor, aggregate: str = "mean_prob"):
    """Per-segment probabilities ``[N, C]`` that clip-level aggregation averages.

    ``'mean_prob'``: softmax (multiclass, key, tempo) or sigmoid (multilabel); ``'mean_sigmoid'``:
    sigmoid for every task, as the music reference's test step (M13).
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is not valid; valid: {list(AGGREGATES)}")
    if aggregate == "mean_sigmoid" or _check_task(task) == "multilabel":
        return torch.sigmoid(logits)
    return torch.softmax(logits, -1)


def aggregate_segments(task: str, logits: torch.Tensor, labels: torch.Tensor,
                       clip_index: torch.Tensor, aggregate: str = "mean_prob"):  # fmt: skip
    """Clip-level outputs from segment outputs.

    Args:
        logits: ``[N_seg, C]``; labels: ``[N_seg]`` or ``[N_seg, C]`` (the clip's, repeated);
        clip_index: ``[N_seg]`` long, which clip each segment comes from.

    Returns:
        ``(probs [N_clip, C], labels [N_clip(, C)], clips [N_clip])``: the mean of
        :func:`clip_probabilities` over each clip's segments, clips in ascending index order.
    """
    clips, inverse = torch.unique(clip_index, sorted=True, return_inverse=True)
    probs = clip_probabilities(task, logits.float(), aggregate)
    sums = torch.zeros(len(clips), probs.shape[1]).index_add_(0, inverse, probs)
    counts = torch.bincount(inverse, minlength=len(clips)).clamp_min(1)
    first = torch.full((len(clips),), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), reduce="amin")
    return sums / counts[:, None], labels[first], clips


def forward_batch(model: nn.Module, batch: dict, device: torch.device, precision: str = "fp32"):
    """Run ``model`` on one ``data.collate`` batch.

    Passes ``attention_mask`` when the batch has one (waveform models). ``precision``: a resolved
    precision of :mod:`.precision` (``'fp32'`` | ``'bf16'`` | ``'fp16'``): the forward runs under
    that autocast, on CPU and CUDA alike; the logits come back as fp32, so losses and metrics
    are computed in fp32.

    Returns ``(logits [B, C] float32, targets on device)``: targets are long ``[B]`` (multiclass)
    or float multi-hot ``[B, C]`` (multilabel), as :func:`loss_fn` expects.
    """
    inputs, mask = batch["input_values"].to(device), batch.get("attention_mask")
    with autocast(precision, device):
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
    precision: str = "fp32",
    return_outputs: bool = False,
    aggregate: str = "mean_prob",
    criterion: nn.Module | None = None,
):
    """Metrics of ``model`` on ``loader`` in eval mode, without gradients (the model's previous
    train/eval mode is restored). ``device`` defaults to where the model's parameters are.

    Segments: when batches carry ``clip_index`` (``[B]`` long, from a loader built with
    ``eval_segment``), the metrics are clip-level: each clip's segment probabilities are averaged
    (:func:`aggregate_segments`, ``aggregate`` 'mean_prob' | 'mean_sigmoid') and
    :func:`compute_metrics` scores those means. ``loss`` stays the mean per-segment loss.

    Args:
        precision: a resolved precision (``'fp32'`` | ``'bf16'`` | ``'fp16'``), see
            :func:`forward_batch`.
        criterion: the loss to report (None: ``loss_fn(task)``), e.g. fit's tempo loss.

    Returns ``{**compute_metrics(task, ...), 'loss': mean per-example loss, 'n': examples}`` (n
    counts clips; with segments also ``'segments'``). With ``return_outputs=True`` also
    ``{'logits' [N, C], 'labels', 'index' [N]}`` (CPU; index is -1 where batches carry none),
    per segment when segmented, plus ``'clip_probs' [N_clip, C]``, ``'clip_labels'`` and
    ``'clip_index'``.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is not valid; valid: {list(AGGREGATES)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    criterion = criterion if criterion is not None else loss_fn(task)
    was_training = model.training
    model.eval()
    out: dict[str, list] = {"logits": [], "labels": [], "index": [], "clip_index": []}
    total = 0.0
    try:
        for batch in loader:
            logits, target = forward_batch(model, batch, device, precision)
            total += criterion(logits, target).item() * len(logits)
            out["logits"].append(logits.cpu())
            out["labels"].append(batch["labels"].cpu())
            out["index"].append(batch.get("index", torch.full((len(logits),), -1)).cpu())
            if "clip_index" in batch:
                out["clip_index"].append(batch["clip_index"].cpu())
    finally:
        model.train(was_training)
    if not out["logits"]:
        raise ValueError("evaluate: the loader yielded no batch")
    if out["clip_index"] and len(out["clip_index"]) != len(out["logits"]):
        raise ValueError("evaluate: some batches carry clip_index and some do not")
    outputs = {k: torch.cat(v) for k, v in out.items() if v}
    n = len(outputs["logits"])
    if "clip_index" in outputs:
        probs, labels, clips = aggregate_segments(
            task, outputs["logits"], outputs["labels"], outputs.pop("clip_index"), aggregate
        )
        outputs.update(clip_probs=probs, clip_labels=labels, clip_index=clips)
        metrics = compute_metrics(task, probs, labels, probabilities=True)
        metrics.update(loss=total / n, n=len(clips), segments=n)
    else:
        metrics = compute_metrics(task, outputs["logits"], outputs["labels"])
        metrics.update(loss=total / n, n=n)
    return (metrics, outputs) if return_outputs else metrics
