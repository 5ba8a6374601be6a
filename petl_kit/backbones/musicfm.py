"""MusicFM (Won et al., "A foundation model for music informatics", ICASSP 2024), 25 Hz BEST-RQ
conformer, written in the kit around transformers' own ``Wav2Vec2ConformerEncoder``.

Spec ``backbones_and_features.md`` §7 / §7.1. The model, 24 kHz mono waveform in::

    wave [B, S] -> MelSpectrogram(24000, n_fft 2048, hop 240, 128 mels) -> AmplitudeToDB
               (fp32, no grad) -> drop the last frame -> (x - mean) / std       [B, 128, S/240]
        -> Conv2dSubsampling: 2 residual 2-D blocks, stride (2, 2) each          [B, 512, 32, S/960]
           -> ``b c f t -> b t (c f)`` -> Linear(16384 -> 1024)                 [B, S/960, 1024]
        -> Wav2Vec2ConformerEncoder (rotary, depthwise kernel 31), final LN     [B, T, 1024]

so 30 s (720,000 samples) give T = 750 tokens at 25 Hz. Each conformer layer is
``x += ½·FFN1(LN(x)); x += MHSA(LN(x)); x += Conv(x); x += ½·FFN2(LN(x)); x = LN(x)``.
The encoder owns a positional conv (8,389,760 parameters in the full model) that transformers'
encoder never applies; it exists so that parameter counts and checkpoint keys match.

Outputs follow transformers: ``last_hidden_state`` is the encoder's final LN of the last layer;
with ``output_hidden_states=True``, ``hidden_states`` has ``num_hidden_layers + 1`` entries: index 0
is the first layer's input, index i the raw output of layer i, and the last one the final-LN
output (as the published model's encoder returned them). So the music reference's 6-layer latent
is ``hidden_states[-1]`` of a 6-layer model, while index 6 of the 12-layer model is the raw
(un-normalised) layer-6 output.

Published checkpoints load with :func:`load_musicfm` (strict; M9: all 12 layers load, then the
encoder is sliced to the requested depth). The music reference's other MusicFM quirks: M7
(attention dropout at evaluation) is ``MusicFMConfig.eval_attention_dropout``; M6 (BatchNorm
statistics updated in frozen modules) follows ``build_model(options={"frozen_modules_train_mode":
True})``. How the kit's methods reach a conformer block is in :mod:`.anatomy`; the model itself
is in :mod:`.musicfm_model`; this file reads the published checkpoints and registers the family.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from .anatomy import CONFORMER_ANATOMY
from .musicfm_model import (
    MSD_MEL_MEAN,
    MSD_MEL_STD,
    Conv2dSubsampling,
    LogMel,
    MusicFMConfig,
    MusicFMModel,
    Res2dBlock,
)
from .registry import Family, _from_pretrained, load_local_folder, register_family
from .strict import new_report, unpickling_error

__all__ = [
    "MSD_MEL_MEAN",
    "MSD_MEL_STD",
    "TINY",
    "Conv2dSubsampling",
    "LogMel",
    "MusicFMConfig",
    "MusicFMModel",
    "Res2dBlock",
    "is_checkpoint_file",
    "load_musicfm",
    "read_state_dict",
]

# --------------------------------------------------------------------------- published checkpoints
# pre-training parts that transfer does not use: the codebook projection, the CLS token, the
# random-projection quantizer and the mel buffers (rebuilt here from the config)
DROPPED_KEYS = ("linear.weight", "linear.bias", "cls_token")
DROPPED_PREFIXES = ("quantizer_", "preprocessor_")
# weight-norm names of the positional conv before torch's parametrizations
LEGACY_NAMES = {
    "conformer.pos_conv_embed.conv.weight_g": (
        "conformer.pos_conv_embed.conv.parametrizations.weight.original0"
    ),
    "conformer.pos_conv_embed.conv.weight_v": (
        "conformer.pos_conv_embed.conv.parametrizations.weight.original1"
    ),
}
TORCH_SUFFIXES = (".pt", ".ckpt", ".pth", ".bin")


def is_checkpoint_file(checkpoint: str | os.PathLike) -> bool:
    """A checkpoint file (existing, or named like one) rather than a folder or a hub id."""
    path = Path(checkpoint).expanduser()
    return path.is_file() or path.suffix in (*TORCH_SUFFIXES, ".safetensors")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, read safely.

    ``.pt`` / ``.ckpt`` / ``.pth`` / ``.bin``: ``torch.load(weights_only=True)`` (no code runs);
    ``.safetensors``: safetensors. The file may hold a plain state dict or a ``{"state_dict": ...}``
    wrapper (the published MusicFM file, whose keys carry the training module's ``model.``
    prefix); the wrapper and a prefix shared by every key are removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"MusicFM checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif path.suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # pickles with code are refused by weights_only
            raise unpickling_error(str(path), err) from err
        except Exception as err:
            raise CheckpointError(
                f"cannot read {path} with torch.load(weights_only=True) "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "re-save its state dict alone: torch.save(ckpt['state_dict'], 'musicfm.pt')"
            ) from err
    else:
        raise CheckpointError(
            f"MusicFM checkpoint {path}: unknown file type {path.suffix!r}; valid: "
            f"{', '.join(TORCH_SUFFIXES)}, .safetensors, or a save_pretrained folder"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds no state dict of tensors (plain or under 'state_dict')"
        )
    prefix = "model."
    if state and all(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def checkpoint_layers(state: dict[str, torch.Tensor]) -> int:
    """Number of conformer layers in a state dict (``conformer.layers.<i>.``)."""
    indices = {int(m.group(1)) for k in state if (m := re.match(r"conformer\.layers\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def transfer_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """``(state for MusicFMModel, dropped keys)``: legacy weight-norm names mapped, pre-training
    parts (:data:`DROPPED_KEYS`, :data:`DROPPED_PREFIXES`) dropped."""
    out, dropped = {}, []
    for key, value in state.items():
        if key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES):
            dropped.append(key)
        else:
            out[LEGACY_NAMES.get(key, key)] = value
    return out, dropped


def slice_layers(model: MusicFMModel, num_layers: int) -> MusicFMModel:
    """Keep the first ``num_layers`` conformer layers (the encoder's final LN stays), in place."""
    have = len(model.conformer.layers)
    if not 1 <= num_layers <= have:
        raise CheckpointError(f"num_hidden_layers={num_layers}; the checkpoint has {have} layers")
    model.conformer.layers = model.conformer.layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    return model


def load_musicfm(checkpoint: str | os.PathLike, **config_overrides) -> MusicFMModel:
    """Load MusicFM weights strictly, then keep ``num_hidden_layers`` layers (M9).

    The family's loader: ``load_backbone('musicfm', checkpoint, **overrides)`` (the one way to
    load any family) calls it and marks the model with its family; this name stays as an alias.

    Args:
        checkpoint: a published checkpoint file (see :func:`read_state_dict`; keys and shapes of
            spec §7.1, ``weight_g``/``weight_v`` accepted) or a folder written by
            ``MusicFMModel.save_pretrained``.
        config_overrides: :class:`MusicFMConfig` fields. ``num_hidden_layers`` (default: all the
            checkpoint has) is applied by loading every layer and slicing, so a 6-layer model
            from the 12-layer file loads strictly (the music reference's 6-layer strict load
            fails, M9).

    Raises:
        CheckpointError: a missing or unexpected key (named), a shape mismatch, an unreadable file.
    """
    overrides = dict(config_overrides)
    depth = overrides.pop("num_hidden_layers", None)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        model = _from_pretrained(MUSICFM, str(path), **overrides)
        return _sliced(model, depth)
    state, dropped = transfer_state_dict(read_state_dict(path))
    config = MusicFMConfig(**{**overrides, "num_hidden_layers": checkpoint_layers(state)})
    model = MusicFMModel(config)
    expected = {k for k in model.state_dict() if not k.startswith("mel.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the MusicFM layout (spec §7.1): missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    try:
        model.load_state_dict(state, strict=False)  # every key checked above; mel is rebuilt
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {err}; check the MusicFM backbone_config sizes") from err
    model.petl_load_report = report = new_report("musicfm", path)
    report["loaded"] = len(state)
    report["dropped"] = {k: "pre-training part (spec §7.1)" for k in dropped}
    return _sliced(model, depth)


def _sliced(model: MusicFMModel, depth: int | None) -> MusicFMModel:
    """Keep ``depth`` layers (M9), recording the loaded layers it drops in the load report."""
    if not depth:
        return model
    keys = set(model.state_dict())
    model = slice_layers(model, depth)
    gone = keys - set(model.state_dict())
    report = model.petl_load_report
    report["dropped"].update({k: f"beyond num_hidden_layers={depth} (M9)" for k in gone})
    report["loaded"] -= len(gone)
    return model


# a tiny random-weight MusicFM for tests and demos (1 s of audio -> 25 tokens of width 32)
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    subsampling_channels=8,
    n_mels=32,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    conv_depthwise_kernel_size=7,
)


def _load(fam: Family, checkpoint, overrides: dict, pos_embed: str) -> MusicFMModel:
    """A published checkpoint file, else a ``save_pretrained`` folder (never a hub id)."""
    if is_checkpoint_file(checkpoint):
        return load_musicfm(checkpoint, **overrides)
    return _load_folder(fam, checkpoint, overrides, pos_embed)


_load_folder = load_local_folder(lambda folder, overrides: load_musicfm(folder, **overrides))

# MusicFM 25 Hz (24 kHz music): its own mel front end (so it takes waveforms) + the conformer
MUSICFM = register_family(
    Family(
        name="musicfm",
        config_cls=MusicFMConfig,
        model_cls=MusicFMModel,
        input_kind="waveform",
        sample_rate=24000,
        default_checkpoint="minzwon/MusicFM (pretrained_msd.pt)",
        anatomy=lambda config: CONFORMER_ANATOMY,
        token_seconds=lambda config: 4 * config.hop_length / config.sample_rate,  # 2 stride-2 convs
        position_embeddings="rotary",
        takes_attention_mask=True,
        extractor_options=lambda config: {"normalize": False},  # it normalises its mel
        reference_ft_last_n_layers=3,  # as the wav2vec2 wrapper, which the music reference follows
        initialiser_inits_conv1d=True,
        reference_train_mode=True,  # M6: the music reference keeps the whole model in train mode
        portable=False,
        tiny=dict(TINY),
        model_types=("musicfm",),
        load=_load,
    )
)
