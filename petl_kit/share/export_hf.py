"""``transformers`` export: a folder that ``pipeline("audio-classification", model=OUT)`` runs.

The folder holds a stock ``*ForSequenceClassification`` (``config.json`` with ``id2label``,
``model.safetensors``) and the ``preprocessor_config.json`` of the run's feature pipeline. It is
written only when the stock class computes what the kit's model computes, and checked: the
exported model's probabilities on a probe clip must equal the kit's within :data:`TOLERANCE`.

What can be expressed:

* methods whose update lives in the stock tensors or merges into them: ``linear`` and
  ``full_ft`` (stock tensors trained), ``bitfit`` (biases), ``lora`` (``W + s·BA`` merged, the
  wrappers unloaded). Adapters, mixtures (dense/soft MoA), prompt and prefix tuning add modules or
  tokens that no stock class has a place for: refused, use ``--format kit`` (LoRA also
  ``--format peft``).
* frame models (wav2vec2, HuBERT, MERT): ``*ForSequenceClassification`` projects every frame,
  mean-pools them (over the attention mask) and applies a Linear; an identity projector and the
  kit's head make it the kit's ``Linear(mean of frames)`` exactly (the mean is linear).
* AST: ``ASTForAudioClassification`` pools ``(CLS + DIST) / 2`` and passes it through a
  LayerNorm before its Linear. The kit's head reads the pooled tokens directly (``ALL``, ``CLS``
  or ``CLS_DIST``), and a LayerNorm of the pooled vector is not a linear map, so no stock AST
  config computes the kit's model: refused, use ``--format kit`` or ``--format peft``.
* heads: ``linear`` on the last layer only (the ``mlp`` probe's ReLU and the layer aggregations
  have no stock counterpart).

The pipeline reads each clip whole, as the kit does for runs without ``eval_segment``; a run
evaluated on segments (music tasks) or cropped to ``max_length`` samples gives the same scores
for clips no longer than one segment / exactly ``max_length`` samples (the card says so).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from .card import model_card

TOLERANCE = 1e-4  # max |probability difference| between the export and the kit on a probe clip
KIT = "use --format kit (every method; `pk.load_run(OUT)` predicts from it)"

# why a backbone class has no stock classification head that computes the kit's model
NOT_STOCK = {
    "ASTModel": "ASTForAudioClassification passes the pooled (CLS + DIST) / 2 token through a "
    "LayerNorm before its Linear; the kit's head is a Linear on the pooled tokens (pooling "
    "{pooling}), and a LayerNorm of the pooled vector is not linear, so no stock AST config "
    "computes this model",
}


def stock_class(backbone: nn.Module):
    """The stock sequence-classification class of a frame backbone (mean-pooling head), or
    None. Keyed by the backbone's own class, which the family record names."""
    from transformers import (
        HubertForSequenceClassification,
        HubertModel,
        Wav2Vec2ForSequenceClassification,
        Wav2Vec2Model,
    )

    return {Wav2Vec2Model: Wav2Vec2ForSequenceClassification,
            HubertModel: HubertForSequenceClassification}.get(type(backbone))  # fmt: skip


def refusal(run) -> str | None:
    """Why the stock classes cannot express ``run``'s model (None: they can)."""
    from ..methods import get_method

    model, args = run.model, run.model.build_args
    name = type(model.backbone).__name__
    if stock_class(model.backbone) is None:
        why = NOT_STOCK.get(name, f"transformers has no audio-classification class over {name}")
        return why.format(pooling=args["pooling"])
    if args["head"] != "linear" or args["layer_aggregation"] != "last":
        return (f"head {args['head']!r} with layer_aggregation {args['layer_aggregation']!r}: "
                "the stock head is one Linear on the last layer's mean frame")  # fmt: skip
    if args["pooling"] not in ("ALL", "SPEECH"):
        return f"pooling {args['pooling']!r}: the stock head mean-pools every frame"
    leftovers = [n for n, _ in _merged_backbone(model).state_dict().items() if "petl_" in n]
    if leftovers:
        merges = "its update is kept in" if get_method(model.method).merges else "it adds"
        return (f"method {model.method!r}: {merges} {len(leftovers)} tensors the stock "
                f"architecture has no place for (e.g. {leftovers[0]})")  # fmt: skip
    return None


def _merged_backbone(model) -> nn.Module:
    """A copy of the backbone with a merging method folded in and its wrappers unloaded."""
    from ..methods import get_method

    model = copy.deepcopy(model).cpu().eval()
    if get_method(model.method).merges:
        model.merge(unload=True)
    return model.backbone


def feature_extractor_config(run):
    """The ``transformers`` feature extractor of the run's waveform pipeline."""
    from transformers import Wav2Vec2FeatureExtractor

    ext = run.extractor
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=ext.sample_rate,
        padding_value=0.0,
        do_normalize=ext.normalize,
        return_attention_mask=bool(run.model.options.pass_attention_mask),
    )


def stock_model(run, backbone: nn.Module):
    """The stock classifier holding ``backbone``'s weights and the kit's head exactly."""
    cls = stock_class(run.model.backbone)
    hidden = backbone.config.hidden_size
    problem = "multi_label_classification" if run.task == "multilabel" else \
        "single_label_classification"  # fmt: skip
    config = cls.config_class.from_dict({
        **backbone.config.to_dict(), "num_labels": len(run.labels),
        "id2label": dict(enumerate(run.labels)),
        "label2id": {name: i for i, name in enumerate(run.labels)},
        "classifier_proj_size": hidden, "use_weighted_layer_sum": False, "problem_type": problem,
    })  # fmt: skip
    stock = cls(config).eval()
    base = getattr(stock, stock.base_model_prefix)
    missing, unexpected = base.load_state_dict(backbone.state_dict(), strict=False)
    if missing or unexpected:
        raise ExportError(f"the merged backbone does not fit {cls.__name__}: missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}; {KIT}")  # fmt: skip
    head = run.model.head
    with torch.no_grad():  # mean(P h) = P mean(h): an identity projector leaves the mean as is
        stock.projector.weight.copy_(torch.eye(hidden))
        stock.projector.bias.zero_()
        stock.classifier.weight.copy_(head.weight.detach().cpu())
        stock.classifier.bias.copy_(head.bias.detach().cpu())
    return stock


def probe_clip(run, seconds: float = 1.0) -> np.ndarray:
    """A deterministic test clip (two tones in noise) at the run's rate; exactly ``max_length``
    samples when the run crops waveforms to that length."""
    n = getattr(run.extractor, "max_samples", None) or int(seconds * run.sample_rate)
    t = np.arange(n) / run.sample_rate
    noise = np.random.default_rng(0).standard_normal(n)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)
            + 0.05 * noise).astype(np.float32)  # fmt: skip


def exported_probabilities(out: Path, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """``[C]`` probabilities of the exported folder's model and feature extractor on ``wave``
    (as the pipeline computes them, without its top-k)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(out).eval()
    fe = AutoFeatureExtractor.from_pretrained(out)
    inputs = fe(wave, sampling_rate=sample_rate, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    multi = model.config.problem_type == "multi_label_classification"
    return (logits.sigmoid() if multi else logits.softmax(-1)).numpy()


def export_hf(run, out: Path) -> Path:
    why = refusal(run)
    if why:
        peft = " or --format peft" if run.model.method == "lora" else ""
        raise ExportError(f"cannot export {run.folder} to transformers: {why}; {KIT}{peft}")
    stock = stock_model(run, _merged_backbone(run.model))
    stock.save_pretrained(out)
    feature_extractor_config(run).save_pretrained(out)
    wave = probe_clip(run)
    kit = run.probabilities([wave], progress=False)[1][0]
    diff = float(np.abs(exported_probabilities(out, wave, run.sample_rate) - kit).max())
    if not diff <= TOLERANCE:
        raise ExportError(
            f"the exported {type(stock).__name__} differs from the kit's model by {diff:.2e} in "
            f"probability on a probe clip (> {TOLERANCE}); {KIT}"
        )
    (out / "export.json").write_text(json.dumps(
        {"format": "hf", "class": type(stock).__name__, "run": str(run.folder),
         "probe_max_abs_diff": diff}, indent=2))  # fmt: skip
    notes = [
        f"{type(stock).__name__}: identity projector + the kit's Linear head (mean over frames); "
        f"checked against the kit on a probe clip: max |Δp| = {diff:.1e}"
    ]
    if run.segment:
        notes.append(f"the run scored clips as the mean of {run.segment}-sample segments; the "
                     "pipeline reads clips whole (equal for clips up to one segment); "
                     "`pk.load_run(RUN).predict` applies the run's protocol")  # fmt: skip
    if getattr(run.extractor, "max_samples", None):
        notes.append(f"the run cropped / padded clips to {run.extractor.max_samples} samples; "
                     "the pipeline reads them whole (equal for clips of that length)")  # fmt: skip
    if run.task in ("key", "tempo"):
        notes.append(f"{run.task} task: the pipeline gives class probabilities; the kit's "
                     "read-out (`predict`) gives the key / BPM")  # fmt: skip
    usage = f"""```python
from transformers import pipeline

classify = pipeline("audio-classification", model="{out}")
classify("clip.wav")          # [{{'label': ..., 'score': ...}}, ...]
```"""
    (out / "README.md").write_text(model_card(run, "hf", usage, notes))
    return out
