"""MERT (Li et al., ICLR 2024, "MERT: acoustic music understanding model with large-scale
self-supervised training") on transformers' own ``HubertModel``.

MERT-v1 is HuBERT-shaped (spec ``backbones_and_features.md`` §6): a 7-layer conv feature encoder
(no conv bias, GroupNorm on layer 0), a LayerNorm'd feature projection, the weight-normed
positional conv and 12 post-LN layers (95M; 330M: 24 pre-LN "stable layer norm" layers). The
published checkpoints need remote code; the kit needs none: :func:`hubert_config` maps the
published ``config.json`` (``model_type: "mert_model"``) onto a ``HubertConfig`` and
:func:`load_mert` maps the weight keys strictly.

Input: a mono **24 kHz** waveform ``[B, S]``; frames at 75 Hz (S = 120,000 → 374 frames).
Output: ``last_hidden_state [B, T, D]``; with ``output_hidden_states=True`` the 13 (95M) or
25 (330M) hidden states.

>>> model = load_mert("path/to/MERT-v1-95M")          # a folder as published, or save_pretrained
>>> model(torch.randn(1, 24000)).last_hidden_state.shape   # [1, 74, 768]
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import HubertConfig, HubertModel

from ..config import ConfigError
from ..errors import MertCheckpointError
from .registry import load_local_folder, register_family
from .strict import new_report, unpickling_error
from .wav2vec2 import frame_family

SAMPLE_RATE = 24000
DEFAULT_CHECKPOINT = "m-a-p/MERT-v1-95M"

# MERT-v1-95M as published (the fields that differ from HubertConfig's defaults, or matter).
MERT_V1_95M: dict[str, Any] = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    feat_extract_norm="group",
    conv_bias=False,
    feat_proj_layer_norm=True,
    feat_proj_dropout=0.1,
    layer_norm_eps=1e-5,
    do_stable_layer_norm=False,
    hidden_dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.0,
    layerdrop=0.05,
    mask_time_prob=0.05,
    mask_feature_prob=0.0,
)
# MERT-v1-330M: pre-LN; dropouts and LayerDrop 0 (spec §6.1; 16 heads as HuBERT-large)
MERT_V1_330M: dict[str, Any] = dict(
    MERT_V1_95M,
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    do_stable_layer_norm=True,
    feat_proj_dropout=0.0,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    layerdrop=0.0,
)

# fields of the remote-code MERTConfig that HubertConfig lacks, with the values the HuBERT path
# reproduces; any other value needs MERT's own code and is refused
_MERT_ONLY = {
    "feature_extractor_cqt": False,  # CQT branch of the pre-training front end
    "deepnorm": False,  # DeepNorm residual scaling
}
# accepted and ignored: bookkeeping, or fields unused on the HuBERT forward path
_IGNORED = {
    "architectures",
    "auto_map",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "_name_or_path",
    "feature_extractor_cqt_bins",  # only with feature_extractor_cqt
    "attention_relax",  # set in 330M, unused on the path the published weights run (§6.1)
    "sample_rate",  # checked below
}
_POS = "encoder.pos_conv_embed.conv."
_OLD_KEYS = {  # weight norm before torch's parametrizations (older transformers / MERT code)
    _POS + "weight_g": _POS + "parametrizations.weight.original0",
    _POS + "weight_v": _POS + "parametrizations.weight.original1",
}
MASK_EMBED = "masked_spec_embed"


def hubert_config(raw: dict[str, Any], where: str = "config.json") -> HubertConfig:
    """A ``HubertConfig`` from a MERT-v1 ``config.json`` (remote-code fields) or a HuBERT one.

    Raises:
        ConfigError naming the field when the folder needs MERT's own code (CQT front end,
        DeepNorm), has a sample rate other than 24 kHz, or carries a field neither config knows.
    """
    known = set(HubertConfig().to_dict())
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _MERT_ONLY:
            if bool(value) != _MERT_ONLY[key]:
                raise ConfigError(
                    f"{where}: {key}={value!r} needs MERT's own model code; the kit loads "
                    f"MERT-v1 checkpoints with {key}={_MERT_ONLY[key]} only"
                )
        elif key == "sample_rate" and value != SAMPLE_RATE:
            raise ConfigError(f"{where}: sample_rate={value}; MERT-v1 runs at {SAMPLE_RATE} Hz")
        elif key in known:
            fields[key] = value
        elif key not in _IGNORED:
            raise ConfigError(
                f"{where}: unknown field {key!r}; neither HubertConfig nor MERT-v1's "
                f"config has it (MERT-only fields: {', '.join(sorted(_MERT_ONLY))})"
            )
    fields.pop("model_type", None)
    return HubertConfig(**fields)


def read_state_dict(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Path]:
    """The weights of ``folder``: ``model.safetensors``, else ``pytorch_model.bin`` read with
    ``torch.load(weights_only=True)`` (tensors only, never pickled code)."""
    folder = Path(folder)
    safe, binary = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safe.is_file():
        return load_file(str(safe)), safe
    if binary.is_file():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True), binary
        except pickle.UnpicklingError as err:  # a pickle with code is refused by weights_only
            raise unpickling_error(str(binary), err) from err
    raise MertCheckpointError(
        f"MERT folder {folder} has no weights; expected model.safetensors or pytorch_model.bin"
    )


def map_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old weight-norm keys (``weight_g`` / ``weight_v``) to the parametrization names."""
    return {_OLD_KEYS.get(k, k): v for k, v in state.items()}


def load_mert(
    folder: str | os.PathLike, config_overrides: dict[str, Any] | None = None
) -> HubertModel:
    """Load a MERT-v1 folder (as published, or written by ``save_pretrained``) strictly.

    The family's loader: ``load_backbone('mert', folder, **overrides)`` (the one way to load any
    family) calls it and marks the model with its family; this name stays as an alias.

    Args:
        folder: holds ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``.
        config_overrides: ``HubertConfig`` fields to change, e.g. ``{'mask_time_prob': 0.0}``.

    Every weight must land on a parameter and every parameter must get a weight; the one
    documented exception (spec §6.3, quirk M10) is ``masked_spec_embed`` when the (overridden)
    masking probabilities are 0, so the model has no such parameter. Anything else is a
    :class:`MertCheckpointError` naming the keys.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise MertCheckpointError(f"MERT folder {folder} has no config.json")
    raw = json.loads(config_file.read_text())
    config = hubert_config({**raw, **(config_overrides or {})}, where=str(config_file))
    state, weights = read_state_dict(folder)
    state = map_keys(state)
    model = HubertModel(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    report = new_report("mert", folder)
    if unexpected == [MASK_EMBED] and MASK_EMBED not in expected:
        unexpected = []  # M10: built without masking, the checkpoint's mask embedding is unused
        state.pop(MASK_EMBED)
        report["dropped"][MASK_EMBED] = "masked-time embedding, unused: the config masks nothing"
    if missing or unexpected:
        hint = ""
        if unexpected and all(k.startswith("encoder.layers.") for k in unexpected):
            hint = "; to keep fewer blocks, load them all and pass build_model(encoder_depth=N)"
        raise MertCheckpointError(
            f"{weights} does not fit the MERT/HuBERT model of {config_file}: "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}{hint}"
        )
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(model.state_dict()[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(model.state_dict()[k].shape)
    ]
    if shapes:
        raise MertCheckpointError(f"{weights} has wrong shapes: {shapes[:5]}")
    model.load_state_dict(state, strict=True)
    report["loaded"] = len(state)
    model.petl_load_report = report
    return model.eval()


def save_mert_checkpoint(
    model: HubertModel, folder: str | os.PathLike, weights: str = "bin"
) -> Path:
    """Write ``model`` in the published MERT-v1 layout (for tests and offline demos).

    ``config.json`` carries the remote-code fields (``model_type: "mert_model"``,
    ``architectures: ["MERTModel"]``, ``auto_map``, ``feature_extractor_cqt``, ``deepnorm``,
    ``attention_relax``, ``sample_rate``) and the weights use the old ``weight_g`` / ``weight_v``
    names, in ``pytorch_model.bin`` (``weights='bin'``) or ``model.safetensors``.
    """
    if weights not in ("bin", "safetensors"):
        raise ConfigError(f"weights={weights!r}; valid: 'bin', 'safetensors'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    for key in ("model_type", "architectures", "dtype", "torch_dtype", "transformers_version"):
        config.pop(key, None)
    config.update(
        model_type="mert_model",
        architectures=["MERTModel"],
        auto_map={
            "AutoConfig": "configuration_MERT.MERTConfig",
            "AutoModel": "modeling_MERT.MERTModel",
        },
        feature_extractor_cqt=False,
        feature_extractor_cqt_bins=336,
        deepnorm=False,
        attention_relax=32.0 if config.get("do_stable_layer_norm") else -1.0,
        sample_rate=SAMPLE_RATE,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    old = {v: k for k, v in _OLD_KEYS.items()}
    state = {old.get(k, k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if weights == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, str(folder / "model.safetensors"))
    return folder


# MERT-v1 (24 kHz music, 75 frames/s) on transformers' HubertModel, read from local folders
MERT = register_family(
    frame_family(
        "mert", HubertConfig, HubertModel, SAMPLE_RATE, DEFAULT_CHECKPOINT,
        base_config=dict(MERT_V1_95M),
        load=load_local_folder(lambda folder, overrides: load_mert(folder, overrides)),
        reference_train_mode=True,  # M6: the music reference keeps the whole model in train mode
        portable=False,
        model_types=("mert_model", "hubert"),
    )
)  # fmt: skip
