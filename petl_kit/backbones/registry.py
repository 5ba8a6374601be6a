"""Backbone families: loading from a Hugging Face id or a local folder, tiny configs for tests,
AST position-embedding resizing, and the feature extractor that belongs to each family.

A family is one entry in :data:`FAMILIES`. ``checkpoint=None`` builds the family's base config
with random weights; ``config_overrides`` change any config field (e.g. ``max_length`` or tiny
sizes). A checkpoint is an HF hub id, a local folder written by ``save_pretrained``, or a built-in
name ``builtin:<name>`` (see :mod:`petl_kit.pretrained`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    ASTConfig,
    ASTModel,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
)

from ..config import ConfigError
from ..errors import CheckpointError
from . import mert as _mert
from . import musicfm as _musicfm
from .scratch import TINY_SCRATCH, ScratchConfig, ScratchModel


@dataclass(frozen=True)
class Family:
    """One backbone family.

    Attributes:
        input_kind: ``'fbank'`` (``[B, L, n_mels]`` log-mel) or ``'waveform'`` (``[B, S]``).
        sample_rate: the rate the backbone expects its audio at.
        default_checkpoint: the checkpoint the published code uses (documentation only; never
            downloaded implicitly).
        tiny: config overrides for a tiny random-weight model (tests, demos).
    """

    name: str
    config_cls: type[PretrainedConfig]
    model_cls: type[PreTrainedModel]
    input_kind: str
    sample_rate: int
    default_checkpoint: str
    tiny: dict[str, Any] = field(default_factory=dict)
    # the family's base config where it differs from ``config_cls()`` (checkpoint=None builds it)
    base_config: dict[str, Any] = field(default_factory=dict)
    # ``load(folder_or_id, overrides) -> model`` where ``model_cls.from_pretrained`` does not fit
    load: Any = None
    # the methods that apply (None: every registered method)
    methods: tuple[str, ...] | None = None
    # what the family's reference code does with frozen modules (profile 'reference', quirks
    # R26/M6): None = as the method's published wrapper (PETL_AST); True = the whole model in
    # train mode for every method, probing and PETL included (the music reference, M6)
    reference_train_mode: bool | None = None


_TINY_FRAME = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32, 32, 32, 32, 32, 32),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)

FAMILIES: dict[str, Family] = {
    "ast": Family(
        "ast",
        ASTConfig,
        ASTModel,
        "fbank",
        16000,
        "MIT/ast-finetuned-audioset-10-10-0.4593",
        tiny=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_length=100,
        ),
    ),
    "wav2vec2": Family(
        "wav2vec2",
        Wav2Vec2Config,
        Wav2Vec2Model,
        "waveform",
        16000,
        "facebook/wav2vec2-base-960h",
        tiny=dict(_TINY_FRAME),
    ),
    "hubert": Family(
        "hubert",
        HubertConfig,
        HubertModel,
        "waveform",
        16000,
        "facebook/hubert-base-ls960",
        tiny=dict(_TINY_FRAME),
    ),
    # MERT-v1 (24 kHz music) runs on transformers' HubertModel; see petl_kit.mert
    "mert": Family(
        "mert",
        HubertConfig,
        HubertModel,
        "waveform",
        24000,
        "m-a-p/MERT-v1-95M",
        tiny=dict(_TINY_FRAME),
        base_config=dict(_mert.MERT_V1_95M),
        load=lambda ckpt, overrides: _mert.load_mert(ckpt, overrides),
        reference_train_mode=True,  # M6
    ),
    # MusicFM 25 Hz (24 kHz music): mel front end + transformers' conformer; see petl_kit.musicfm
    "musicfm": Family(
        "musicfm",
        _musicfm.MusicFMConfig,
        _musicfm.MusicFMModel,
        "waveform",
        24000,
        "minzwon/MusicFM (pretrained_msd.pt)",
        tiny=dict(_musicfm.TINY),
        load=lambda ckpt, overrides: _musicfm.load_musicfm(ckpt, **overrides),
        reference_train_mode=True,  # M6
    ),
    # the from-scratch music baseline (a kit design: a small CNN over log-mel); see petl_kit.scratch
    "scratch": Family(
        "scratch",
        ScratchConfig,
        ScratchModel,
        "waveform",
        24000,
        "",
        tiny=dict(TINY_SCRATCH),
        methods=("full_ft",),
    ),
}


def get_family(name: str) -> Family:
    key = name.lower().replace("-", "").replace("_", "")
    key = {"wav2vec": "wav2vec2", "w2v": "wav2vec2", "w2v2": "wav2vec2"}.get(key, key)
    if key not in FAMILIES:
        raise ConfigError(f"unknown backbone {name!r}; valid backbones: {', '.join(FAMILIES)}")
    return FAMILIES[key]


def list_backbones() -> list[str]:
    """Names of the registered backbone families, in registration order."""
    return list(FAMILIES)


def tiny_config(family: str, **overrides: Any) -> dict[str, Any]:
    """Config overrides of a tiny random-weight backbone of ``family`` (for tests and demos)."""
    return {**get_family(family).tiny, **overrides}


def _check_overrides(fam: Family, overrides: dict[str, Any]) -> None:
    known = set(fam.config_cls().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown {fam.name} backbone_config key(s) {', '.join(map(repr, unknown))}; "
            f"see transformers.{fam.config_cls.__name__} for valid fields"
        )


def resolve_checkpoint(checkpoint: str | os.PathLike) -> str:
    """A local folder for ``builtin:`` names and existing paths; hub ids are returned unchanged."""
    ckpt = str(checkpoint)
    if ckpt.startswith("builtin:"):
        from .pretrained import builtin_checkpoint

        return str(builtin_checkpoint(ckpt.removeprefix("builtin:")))
    path = Path(ckpt).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"checkpoint folder {path} has no config.json; expected a folder written by "
                "`model.save_pretrained(folder)` (config.json + model.safetensors)"
            )
        return str(path)
    # hub ids are 'name' or 'org/name'; anything else is meant as a folder
    looks_like_path = ckpt.startswith((".", "/", "~", "\\")) or ckpt.count("/") > 1
    if looks_like_path or path.exists():
        raise CheckpointError(
            f"checkpoint folder {ckpt!r} does not exist; pass a folder written by "
            "`save_pretrained` or a Hugging Face hub id such as "
            "'MIT/ast-finetuned-audioset-10-10-0.4593'"
        )
    return ckpt


def _unreachable(ckpt: str, fam: Family, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot load checkpoint {ckpt!r} for backbone {fam.name!r} ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}). If this machine cannot reach the "
        "Hugging Face hub, make a local copy where it can: "
        f"`{fam.model_cls.__name__}.from_pretrained({ckpt!r}).save_pretrained('DIR')` "
        "(or `hf download <id> --local-dir DIR`), copy DIR here and pass checkpoint='DIR'"
    )


def _from_pretrained(fam: Family, ckpt: str, **kwargs: Any) -> PreTrainedModel:
    try:
        return fam.model_cls.from_pretrained(ckpt, **kwargs)
    except (OSError, ValueError) as err:
        raise _unreachable(ckpt, fam, err) from err
    except Exception as err:  # network stacks raise their own types
        if "connect" in type(err).__name__.lower() or "http" in type(err).__name__.lower():
            raise _unreachable(ckpt, fam, err) from err
        raise


def load_backbone(
    family: str,
    checkpoint: str | os.PathLike | None = None,
    config_overrides: dict[str, Any] | None = None,
    *,
    pos_embed: str = "crop_interpolate",
) -> PreTrainedModel:
    """Build a backbone of ``family``.

    Args:
        family: ``'ast'`` | ``'wav2vec2'`` | ``'hubert'``.
        checkpoint: None (base config, random weights), an HF id, a local ``save_pretrained``
            folder, or ``'builtin:<name>'``.
        config_overrides: config fields to change, e.g. ``{'max_length': 400}``.
        pos_embed: AST only, when the checkpoint's patch grid differs from the new one:
            ``'crop_interpolate'`` (AST recipe: centre-crop or bilinearly interpolate the
            pretrained grid) or ``'zeros'`` (the published PETL code, quirk R1).

    Returns:
        the HF model (``ASTModel``, ``Wav2Vec2Model``, ``HubertModel``) with ``petl_family`` set.
    """
    fam = get_family(family)
    overrides = dict(config_overrides or {})
    _check_overrides(fam, overrides)
    if checkpoint is None:
        model = fam.model_cls(fam.config_cls(**{**fam.base_config, **overrides}))
    elif fam.name == "musicfm" and _musicfm.is_checkpoint_file(checkpoint):
        model = _musicfm.load_musicfm(checkpoint, **overrides)  # a published .pt / .safetensors
    else:
        ckpt = resolve_checkpoint(checkpoint)
        if fam.name == "ast":
            model = _load_ast(fam, ckpt, overrides, pos_embed)
        else:
            model = _load_with(fam, ckpt, overrides)
    model.petl_family = fam.name
    model.petl_checkpoint = None if checkpoint is None else str(checkpoint)
    return model


def _load_with(fam: Family, ckpt: str, overrides: dict) -> PreTrainedModel:
    """``fam.load`` for local folders (e.g. MERT's published layout), else ``from_pretrained``."""
    if fam.load is not None and Path(ckpt).is_dir():
        return fam.load(ckpt, overrides)
    if fam.load is not None:  # a hub id: only a local copy can be read without remote code
        raise CheckpointError(
            f"backbone {fam.name!r} loads from a local folder; {ckpt!r} is not one. Download it "
            f"where the hub is reachable (`hf download {ckpt} --local-dir DIR`), copy DIR here "
            "and pass checkpoint='DIR'"
        )
    return _from_pretrained(fam, ckpt, **overrides)


def _load_ast(fam: Family, ckpt: str, overrides: dict, pos_embed: str) -> ASTModel:
    """Load AST weights at the checkpoint's own input size, then move them to the new one."""
    if pos_embed not in ("crop_interpolate", "zeros"):
        raise ConfigError(f"pos_embed={pos_embed!r}; valid: 'crop_interpolate', 'zeros'")
    source = _from_pretrained(fam, ckpt)
    config = ASTConfig.from_dict({**source.config.to_dict(), **overrides})
    if config.to_dict() == source.config.to_dict():
        return source
    model = ASTModel(config)
    state = source.state_dict()
    old_pos = state.pop("embeddings.position_embeddings")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"embeddings.position_embeddings"}:
        raise CheckpointError(
            f"checkpoint {ckpt!r} does not fit the AST config overrides {overrides}: "
            f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    new_grid = model.embeddings.get_shape(config)
    if tuple(old_pos.shape) == tuple(model.embeddings.position_embeddings.shape):
        new_pos = old_pos
    elif pos_embed == "zeros":
        new_pos = torch.zeros_like(model.embeddings.position_embeddings)  # quirk R1
    else:
        old_grid = source.embeddings.get_shape(source.config)
        new_pos = resize_ast_position_embeddings(old_pos, old_grid, new_grid)
    with torch.no_grad():
        model.embeddings.position_embeddings.copy_(new_pos)
    return model


def _fit_axis(grid: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Centre-crop ``grid [D, F, T]`` along ``axis`` to ``size``, or bilinearly interpolate up."""
    old = grid.shape[axis]
    if size == old:
        return grid
    if size < old:
        start = old // 2 - size // 2  # AST recipe: 50 - t_dim // 2 for the 101-column grid
        return grid.narrow(axis, start, size)
    target = list(grid.shape[1:])
    target[axis - 1] = size
    return F.interpolate(grid[None], size=tuple(target), mode="bilinear", align_corners=False)[0]


def resize_ast_position_embeddings(
    pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Move AST position embeddings to a new patch grid (spec ``backbones_and_features`` §1.4).

    Args:
        pos: ``[1, 2 + F_old * T_old, D]`` (CLS, DIST, then patches frequency-major).
        old_grid, new_grid: ``(F, T)`` patch grids.

    Returns:
        ``[1, 2 + F_new * T_new, D]``: the special rows unchanged; the patch grid centre-cropped
        where the new axis is shorter and bilinearly interpolated where it is longer.
    """
    (f0, t0), (f1, t1) = old_grid, new_grid
    special, patches = pos[:, :2], pos[:, 2:]
    d = pos.shape[-1]
    grid = patches[0].reshape(f0, t0, d).permute(2, 0, 1)  # [D, F, T]
    grid = _fit_axis(grid, 2, t1)
    grid = _fit_axis(grid, 1, f1)
    patches = grid.permute(1, 2, 0).reshape(1, f1 * t1, d)
    return torch.cat([special, patches], dim=1)


def patch_grid(backbone: PreTrainedModel) -> tuple[int, int] | None:
    """``(frequency rows, time columns)`` of an AST's patch grid; None for frame models."""
    if getattr(backbone, "petl_family", None) != "ast":
        return None
    return backbone.embeddings.get_shape(backbone.config)


def feature_extractor(backbone: PreTrainedModel, **kwargs: Any):
    """The feature extractor that belongs to ``backbone`` (fbank for AST, waveform otherwise)."""
    from ..data.features import FbankExtractor, WaveformExtractor

    fam = get_family(backbone.petl_family)
    if fam.input_kind == "fbank":
        cfg = backbone.config
        return FbankExtractor(max_length=cfg.max_length, num_mel_bins=cfg.num_mel_bins, **kwargs)
    rate = kwargs.pop("sample_rate", fam.sample_rate)
    if rate != fam.sample_rate:
        raise ConfigError(
            f"backbone {fam.name!r} takes {fam.sample_rate} Hz audio; sample_rate={rate} is not "
            f"valid (the datasets resample to the extractor's rate)"
        )
    if fam.name == "musicfm":  # MusicFM normalises its mel spectrogram, not the waveform
        kwargs.setdefault("normalize", False)
    return WaveformExtractor(sample_rate=fam.sample_rate, **kwargs)


def frames_for(backbone: PreTrainedModel, num_samples: int) -> int:
    """Output frames of a frame model's conv feature encoder for ``num_samples`` input samples."""
    n = num_samples
    for k, s in zip(backbone.config.conv_kernel, backbone.config.conv_stride, strict=True):
        n = math.floor((n - k) / s) + 1
    return n
