"""Strict backbone loading: what a checkpoint gave the model, as a load report.

Every backbone weight must come from the checkpoint. transformers' own loading info
(``from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)``) lists missing,
unexpected and shape-mismatched keys; :func:`check_loading_info` turns them into a
:class:`CheckpointError` naming the checkpoint and the first keys, except what is expected:

- heads of task checkpoints (``ASTForAudioClassification``: ``classifier.*``;
  ``Wav2Vec2ForCTC``: ``lm_head.*``; ``*ForSequenceClassification``: ``projector.*``,
  ``classifier.*``; the base-model prefix such as ``wav2vec2.`` is stripped by transformers) are
  dropped by name (:attr:`Family.task_heads`);
- a masked-time embedding the model has no use for (masking probabilities 0) is dropped;
- weights the model has and the checkpoint lacks are *newly initialised*: refused by
  ``load_backbone`` unless the user names them (``allow_new_weights``, glob patterns).

The load report (a JSON-able dict, ``backbone.petl_load_report``; a run writes it as
``load_report.json``)::

    {"family", "checkpoint", "source": "checkpoint" | "random", "loaded": <tensors>,
     "dropped": {key: why}, "newly_initialised": [keys], "position_embeddings": None |
     {"key", "from_grid", "to_grid", "how"}}
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# keys of task heads on top of the base models (transformers' *For<Task> classes)
TASK_HEADS = (
    "classifier.",  # *ForAudioClassification, *ForSequenceClassification
    "projector.",  # *ForSequenceClassification, *ForXVector
    "lm_head.",  # *ForCTC
    "layer_weights",  # use_weighted_layer_sum
    "quantizer.",  # Wav2Vec2ForPreTraining
    "project_q.",
    "project_hid.",
    "tdnn.",  # *ForXVector
    "objective.",
)
MASK_EMBED = "masked_spec_embed"
SHOWN = 8  # keys named in a message


def first(keys, n: int = SHOWN) -> str:
    """``['a', 'b', ...]``: the first ``n`` of ``keys`` (sorted) and how many more."""
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{keys[:n]}{more}"


def new_report(family: str, checkpoint: Any, source: str = "checkpoint") -> dict[str, Any]:
    """An empty load report (see the module docstring)."""
    return {
        "family": family,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "source": source,
        "loaded": 0,
        "dropped": {},
        "newly_initialised": [],
        "position_embeddings": None,
    }


def random_report(family: str, model) -> dict[str, Any]:
    """``checkpoint=None``: every weight is random on purpose."""
    report = new_report(family, None, source="random")
    report["newly_initialised"] = sorted(model.state_dict())
    return report


def expected_model_types(fam) -> tuple[str, ...]:
    """The ``config.json`` ``model_type`` values a family reads (its record, else its config's)."""
    return tuple(fam.model_types) or (fam.config_cls.model_type,)


def check_model_type(fam, checkpoint: str, raw: dict[str, Any]) -> None:
    """Refuse a checkpoint of another family, naming both model types."""
    found = raw.get("model_type")
    valid = expected_model_types(fam)
    if found not in valid:
        raise CheckpointError(
            f"checkpoint {checkpoint!r} is a {found!r} model, not {' or '.join(map(repr, valid))} "
            f"(its config.json model_type; backbone {fam.name!r} reads the latter): pass the "
            f"backbone of its family or a {fam.name} checkpoint"
        )


def _drop_reason(fam, key: str, model) -> str | None:
    if key.startswith(tuple(fam.task_heads)):
        return f"task head ({key.split('.')[0]}) of a task checkpoint"
    if key == MASK_EMBED and MASK_EMBED not in model.state_dict():
        return "masked-time embedding, unused: the config masks nothing"
    return None


def check_loading_info(fam, checkpoint: str, model, info: dict[str, Any]) -> dict[str, Any]:
    """The load report of ``model_cls.from_pretrained(checkpoint, output_loading_info=True)``.

    Raises:
        CheckpointError: unexpected keys that are no task head, shape-mismatched keys, or
            transformers' error messages, naming ``checkpoint`` and the first keys.
    """
    prefix = f"{fam.model_cls.base_model_prefix}."
    # transformers strips the base-model prefix of the keys it loads, not of unexpected ones
    unexpected = {k.removeprefix(prefix) for k in info.get("unexpected_keys", ())}
    report = new_report(fam.name, checkpoint)
    for key in sorted(unexpected):
        reason = _drop_reason(fam, key, model)
        if reason:
            report["dropped"][key] = reason
    extra = sorted(unexpected - set(report["dropped"]))
    if extra:
        hint = ""
        if all(re.search(r"\blayers?\.\d+\.", k) for k in extra):
            hint = "; to keep fewer blocks, load them all and pass build_model(encoder_depth=N)"
        raise CheckpointError(
            f"checkpoint {checkpoint!r} has weights the {fam.name} model has no place for: "
            f"unexpected keys {first(extra)}{hint}"
        )
    mismatched = sorted(info.get("mismatched_keys", ()), key=lambda m: m[0])
    if mismatched:
        shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]
        raise CheckpointError(
            f"checkpoint {checkpoint!r} does not fit the {fam.name} config: shape-mismatched "
            f"keys {shapes[:SHOWN]}; check the backbone_config sizes"
        )
    if info.get("error_msgs"):
        raise CheckpointError(f"checkpoint {checkpoint!r}: {info['error_msgs'][:3]}")
    missing = set(info.get("missing_keys", ()))
    report["newly_initialised"] = sorted(missing)
    report["loaded"] = len(set(model.state_dict()) - missing)
    return report


def check_new_weights(report: dict[str, Any], allow: list[str] | tuple[str, ...]) -> None:
    """Refuse newly initialised weights not named by an ``allow_new_weights`` glob pattern."""
    new = [k for k in report["newly_initialised"] if not any(fnmatch.fnmatch(k, p) for p in allow)]
    if report["source"] == "random" or not new:
        return
    patterns = sorted({re.sub(r"^(.*?\.\d+)\..*$", r"\1.*", k) for k in new})
    raise CheckpointError(
        f"checkpoint {report['checkpoint']!r} lacks {len(new)} weight(s) the {report['family']} "
        f"model needs: missing keys {first(new)}; they would be randomly initialised. If that "
        f"is intended (e.g. more layers than the checkpoint holds), name them: "
        f"backbone_config={{'allow_new_weights': {patterns[:SHOWN]}}}"
    )


def unpickling_error(checkpoint: str, err: Exception) -> CheckpointError:
    """A refused pickle (``torch.load(weights_only=True)``), naming the file and why."""
    path = Path(checkpoint)
    files = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt")) if path.is_dir() else [path]
    named = ", ".join(str(f) for f in files) or str(path)
    why = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return CheckpointError(
        f"refused to unpickle {named}: torch.load(weights_only=True) found more than tensors "
        f"({why}); a pickle can run code when loaded. Re-save the weights as model.safetensors "
        "where the file is trusted (`model.save_pretrained(folder)`)"
    )


def summary(report: dict[str, Any] | None) -> str:
    """One line: what the backbone's weights came from."""
    if not report:
        return "backbone load: no load report"
    if report["source"] == "random":
        return (f"backbone {report['family']}: random weights (checkpoint=None), "
                f"{len(report['newly_initialised'])} tensors initialised")  # fmt: skip
    heads = sorted({k.split(".")[0] for k in report["dropped"]})
    parts = [f"{report['loaded']} tensors loaded",
             f"{len(report['dropped'])} dropped" + (f" ({', '.join(heads)})" if heads else ""),
             f"{len(report['newly_initialised'])} newly initialised"]  # fmt: skip
    pos = report.get("position_embeddings")
    if pos:
        parts.append(f"position embeddings {pos['from_grid']} -> {pos['to_grid']} by {pos['how']}")
    return f"backbone {report['family']} from {report['checkpoint']}: " + ", ".join(parts)
