"""The backbone family registry: one :class:`Family` record per family, and what reads it.

Each family is one file in this package that builds its record and calls :func:`register_family`
(``ast.py``; ``wav2vec2.py`` for wav2vec 2.0 and HuBERT; ``mert.py``; ``musicfm.py``;
``scratch.py``). Everything code outside ``backbones/`` needs to know about a family is a field of
its record, so no code elsewhere compares family names.

``checkpoint=None`` builds the family's base config with random weights; ``config_overrides``
change any config field (e.g. ``max_length`` or tiny sizes). A checkpoint is an HF hub id, a local
folder written by ``save_pretrained``, a built-in name ``builtin:<name>`` (see
:mod:`petl_kit.backbones.pretrained`) or whatever else the family's ``load`` reads (MusicFM: a
published ``.pt`` file).

Loading is strict (:mod:`.strict`): every backbone weight comes from the checkpoint. Missing,
unexpected or shape-mismatched keys and a checkpoint of another family (``config.json``
``model_type`` not in :attr:`Family.model_types`) are a :class:`CheckpointError`; task heads
(:attr:`Family.task_heads`) are dropped by name. Weights a config override adds (more layers than
the checkpoint holds) are refused unless named: ``backbone_config={'allow_new_weights':
['encoder.layers.2.*']}`` (glob patterns over weight names; or ``load_backbone(...,
allow_new_weights=[...])``). Every model carries its load report as ``petl_load_report``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PretrainedConfig, PreTrainedModel

from ..config import ConfigError
from ..errors import CheckpointError
from . import strict

if TYPE_CHECKING:
    from .anatomy import Anatomy

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "Family",
    "frames_for",
    "get_family",
    "list_backbones",
    "load_backbone",
    "load_local_folder",
    "load_pretrained",
    "patch_grid",
    "register_family",
    "resolve_checkpoint",
    "tiny_config",
    "unregister_family",
]

INPUT_KINDS = ("fbank", "waveform")


def load_pretrained(
    fam: Family, checkpoint: str | os.PathLike, overrides: dict, pos_embed: str
) -> PreTrainedModel:
    """The default :attr:`Family.load`: ``model_cls.from_pretrained`` of a hub id or folder."""
    return _from_pretrained(fam, resolve_checkpoint(checkpoint), **overrides)


@dataclass(frozen=True)
class Family:
    """One backbone family: everything the kit outside ``backbones/`` may know about it.

    Attributes:
        name: the canonical name (``backbone=`` of ``build_model``).
        config_cls, model_cls: the transformers config and model classes.
        input_kind: what the model's forward takes: ``'fbank'`` (``[B, L, n_mels]`` log-mel
            computed by the kit's ``FbankExtractor``) or ``'waveform'`` (``[B, S]``; a family
            whose model computes a mel spectrogram itself, as MusicFM, takes waveforms).
        sample_rate: the rate in Hz the backbone expects its audio at.
        default_checkpoint: the checkpoint the published code uses (documentation only; never
            downloaded implicitly).
        anatomy: ``f(config) -> Anatomy``: where blocks, sub-layers, per-block and final
            LayerNorms live (:mod:`.anatomy`, the one place that knows block internals).
        token_seconds: ``f(config) -> float``: seconds between consecutive output tokens along
            time (a frame model's hop; an AST patch column's time stride).
        special_tokens: token roles (:mod:`.anatomy` ``CLS``, ``DIST``) of the tokens in front
            of the patches or frames, in order; :attr:`patch_start` is where patches start.
        patch_grid: ``f(backbone) -> (frequency rows, time columns)`` for patch models, or None
            (frame models: one token per time step).
        position_embeddings: how positions enter: ``'learned_grid'`` (a learned table over the
            patch grid, moved to a new grid on load, see ``pos_embed``), ``'conv'`` (a
            positional convolution), ``'rotary'`` or ``'none'``.
        learned_tokens: dotted paths of learned position embeddings and special tokens, which
            Hugging Face initialises to zeros (a from-scratch pre-training re-draws them).
        takes_attention_mask: the forward takes a sample-level ``attention_mask`` and the model
            maps it to frames (``_get_feature_vector_attention_mask``).
        extractor_options: ``f(config) -> dict`` of feature-extractor options that follow from
            the config (AST: ``max_length``, ``num_mel_bins``; MusicFM: no waveform
            normalisation, it normalises its own mel).
        reference_trains_final_norm: the published PETL wrappers of this family keep the final
            LayerNorm trainable (PETL_AST's AST wrappers); methods whose registry entry says
            ``trains_final_norm`` follow (applied by ``build_model``).
        reference_trains_site_norms: those wrappers also unfreeze the LayerNorm of each sub-layer
            an adapter or a mixture wraps (``finetune_LN``).
        reference_dead_conformer_ln: the reference's conformer adapter computes its LayerNorm
            and discards the output (quirk R5: the AST copy; the wav2vec2 copy applies it).
        reference_ft_last_n_layers: full fine-tuning's ``'auto'``: the last N blocks train
            (PETL_AST's wav2vec2 wrapper: 3), or None for all of them (its AST wrapper).
        initialiser_inits_conv1d: the family's Hugging Face initialiser re-initialises Conv1d
            modules injected into the backbone (wav2vec2's: Kaiming-normal; quirk R2).
        tiny: config overrides for a tiny random-weight model (tests, demos).
        base_config: the family's base config where it differs from ``config_cls()``
            (``checkpoint=None`` builds it).
        load: ``f(family, checkpoint, overrides, pos_embed) -> model`` for a given checkpoint
            (:func:`load_pretrained`: ``from_pretrained`` of a hub id or folder).
        portable: a ``save_pretrained`` folder of the backbone is a checkpoint ``load`` reads
            back as it is (exports carry the frozen backbone that way); False where the loader
            reads the published layout only (MERT, MusicFM).
        methods: the methods that apply (None: every registered method).
        model_types: the ``config.json`` ``model_type`` values of this family's checkpoints
            (empty: ``config_cls.model_type``); another is refused naming both.
        task_heads: key prefixes of task-checkpoint heads dropped by name on load
            (:data:`.strict.TASK_HEADS`: ``classifier.``, ``lm_head.``, ``projector.``, ...).
    """

    name: str
    config_cls: type[PretrainedConfig]
    model_cls: type[PreTrainedModel]
    input_kind: str
    sample_rate: int
    default_checkpoint: str
    anatomy: Callable[[PretrainedConfig], Anatomy]
    token_seconds: Callable[[PretrainedConfig], float]
    special_tokens: tuple[int, ...] = ()
    patch_grid: Callable[[PreTrainedModel], tuple[int, int]] | None = None
    position_embeddings: str = "conv"
    learned_tokens: tuple[str, ...] = ()
    takes_attention_mask: bool = True
    extractor_options: Callable[[PretrainedConfig], dict] = lambda config: {}
    reference_trains_final_norm: bool = False
    reference_trains_site_norms: bool = False
    reference_dead_conformer_ln: bool = False
    reference_ft_last_n_layers: int | None = None
    initialiser_inits_conv1d: bool = False
    tiny: dict[str, Any] = field(default_factory=dict)
    base_config: dict[str, Any] = field(default_factory=dict)
    load: Callable[..., PreTrainedModel] = load_pretrained
    portable: bool = True
    methods: tuple[str, ...] | None = None
    # what the family's reference code does with frozen modules (profile 'reference', quirks
    # R26/M6): None = as the method's published wrapper (PETL_AST); True = the whole model in
    # train mode for every method, probing and PETL included (the music reference, M6)
    reference_train_mode: bool | None = None
    model_types: tuple[str, ...] = ()
    task_heads: tuple[str, ...] = strict.TASK_HEADS

    @property
    def patch_start(self) -> int:
        """Index of the first patch / frame token (after the special tokens)."""
        return len(self.special_tokens)


FAMILIES: dict[str, Family] = {}
_ALIASES = {"wav2vec": "wav2vec2", "w2v": "wav2vec2", "w2v2": "wav2vec2"}


def _key(name: str) -> str:
    key = str(name).lower().replace("-", "").replace("_", "")
    return _ALIASES.get(key, key)


def register_family(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILIES` (its own file calls this once, at import)."""
    if family.name in FAMILIES:
        raise ValueError(f"backbone family {family.name!r} is registered twice")
    if _key(family.name) != family.name:
        raise ValueError(f"family name {family.name!r}: use lower case without '-' or '_'")
    if family.input_kind not in INPUT_KINDS:
        raise ValueError(f"family {family.name!r}: input_kind {family.input_kind!r}; valid: "
                         f"{', '.join(INPUT_KINDS)}")  # fmt: skip
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> Family:
    """Remove a registered family (tests that register a throwaway record)."""
    return FAMILIES.pop(get_family(name).name)


def get_family(name: str) -> Family:
    """The record of ``name`` (case, ``-`` and ``_`` ignored; ``'w2v'`` = ``'wav2vec2'``)."""
    key = _key(name)
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
        # the one recursion of the package: a built-in checkpoint pre-trains a model once
        from .pretrained import builtin_checkpoint

        return str(builtin_checkpoint(ckpt.removeprefix("builtin:")))
    path = Path(ckpt).expanduser()
    if path.is_file():
        raise CheckpointError(
            f"checkpoint {ckpt!r} is a file; this backbone loads a folder written by "
            "`model.save_pretrained(folder)` (config.json + model.safetensors) or a hub id"
        )
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
    """``model_cls.from_pretrained`` strictly: the model, with ``petl_load_report`` set."""
    try:
        raw, _ = PretrainedConfig.get_config_dict(ckpt)
        strict.check_model_type(fam, ckpt, raw)
        model, info = fam.model_cls.from_pretrained(
            ckpt, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:
        raise strict.unpickling_error(ckpt, err) from err
    except (OSError, ValueError) as err:
        raise _unreachable(ckpt, fam, err) from err
    except Exception as err:  # network stacks raise their own types
        if "connect" in type(err).__name__.lower() or "http" in type(err).__name__.lower():
            raise _unreachable(ckpt, fam, err) from err
        raise
    model.petl_load_report = strict.check_loading_info(fam, ckpt, model, info)
    return model


def load_local_folder(read: Callable[[str, dict], PreTrainedModel]) -> Callable:
    """A :attr:`Family.load` for families read from local folders only (``read(folder,
    overrides)``): a hub id is refused with how to make a local copy (no remote code runs)."""

    def load(fam: Family, checkpoint, overrides: dict, pos_embed: str) -> PreTrainedModel:
        ckpt = resolve_checkpoint(checkpoint)
        if not Path(ckpt).is_dir():
            raise CheckpointError(
                f"backbone {fam.name!r} loads from a local folder; {ckpt!r} is not one. Download "
                f"it where the hub is reachable (`hf download {ckpt} --local-dir DIR`), copy DIR "
                "here and pass checkpoint='DIR'"
            )
        raw = json.loads((Path(ckpt) / "config.json").read_text())
        strict.check_model_type(fam, ckpt, raw)
        return read(ckpt, overrides)

    return load


def load_backbone(
    family: str,
    checkpoint: str | os.PathLike | None = None,
    config_overrides: dict[str, Any] | None = None,
    *,
    pos_embed: str = "crop_interpolate",
    allow_new_weights: list[str] | tuple[str, ...] = (),
    **overrides: Any,
) -> PreTrainedModel:
    """Build a backbone of ``family``, any registered family (see :func:`list_backbones`).

    >>> load_backbone("ast", "MIT/ast-finetuned-audioset-10-10-0.4593", max_length=400)
    >>> load_backbone("musicfm", "pretrained_msd.pt", num_hidden_layers=6)
    >>> load_backbone("mert", "ckpt/MERT-v1-95M", mask_time_prob=0.0)

    ``load_mert`` and ``load_musicfm`` are the same loaders for their one family.

    Args:
        family: a registered name: ``'ast'``, ``'wav2vec2'``, ``'hubert'``, ``'mert'``,
            ``'musicfm'``, ``'scratch'``.
        checkpoint: None (base config, random weights), an HF id, a local ``save_pretrained``
            folder, ``'builtin:<name>'``, or what the family's loader reads (MusicFM: a file).
        config_overrides, overrides: config fields to change, as a dict and/or as keywords
            (the keywords win), e.g. ``{'max_length': 400}`` or ``max_length=400``.
        pos_embed: families with ``position_embeddings='learned_grid'`` (AST), when the
            checkpoint's patch grid differs from the new one: ``'crop_interpolate'`` (AST recipe:
            centre-crop or bilinearly interpolate the pretrained grid) or ``'zeros'`` (the
            published PETL code, quirk R1). Other families ignore it.
        allow_new_weights: glob patterns of weights the checkpoint may lack, randomly
            initialised (e.g. ``['encoder.layers.2.*']`` for a third layer); also read from
            ``config_overrides['allow_new_weights']``. Any other missing weight is refused.

    Returns:
        the HF model (``ASTModel``, ``Wav2Vec2Model``, ``HubertModel``, ...) with
        ``petl_family`` (the record's name), ``petl_checkpoint`` and ``petl_load_report``
        (:mod:`.strict`) set.

    Raises:
        CheckpointError: the checkpoint does not give every weight (module docstring).
    """
    fam = get_family(family)
    overrides = {**(config_overrides or {}), **overrides}
    allow = [*allow_new_weights, *overrides.pop("allow_new_weights", ())]
    _check_overrides(fam, overrides)
    if checkpoint is None:
        model = fam.model_cls(fam.config_cls(**{**fam.base_config, **overrides}))
        model.petl_load_report = strict.random_report(fam.name, model)
    else:
        model = fam.load(fam, checkpoint, overrides, pos_embed)
        if getattr(model, "petl_load_report", None) is None:
            raise CheckpointError(
                f"backbone {fam.name!r}: its loader gave no load report (petl_load_report); "
                "a Family.load must check every key (see petl_kit.backbones.strict)"
            )
        report = model.petl_load_report
        strict.check_new_weights(report, allow)
        report["allow_new_weights"] = allow
        if report["checkpoint"] != str(checkpoint):  # as the user named it (builtin:, ~/...)
            report["folder"], report["checkpoint"] = report["checkpoint"], str(checkpoint)
    model.petl_family = fam.name
    model.petl_checkpoint = None if checkpoint is None else str(checkpoint)
    return model


def patch_grid(backbone: PreTrainedModel) -> tuple[int, int] | None:
    """``(frequency rows, time columns)`` of a patch model's grid; None for frame models."""
    fam = get_family(backbone.petl_family)
    return None if fam.patch_grid is None else tuple(fam.patch_grid(backbone))


def frames_for(backbone: PreTrainedModel, num_samples: int) -> int:
    """Output frames of a frame model's conv feature encoder for ``num_samples`` input samples."""
    n = num_samples
    for k, s in zip(backbone.config.conv_kernel, backbone.config.conv_stride, strict=True):
        n = math.floor((n - k) / s) + 1
    return n
