"""Backbone-level behaviour switches of a PETL model: each quirk of the published code that
is not a method's own (spec ``methods.md`` §15), under both profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import ConfigError, option


@dataclass(frozen=True)
class ModelOptions:
    """Backbone-level behaviour switches (spec ``methods.md`` §15; reference → corrected).

    pos_embed: AST position embeddings at a new input length (R1):
        ``'zeros'`` → ``'crop_interpolate'``.
    frozen_modules_train_mode: frozen parts stay in train mode, so dropout/LayerDrop/HF masking
        (and BatchNorm statistics) act inside them (R26/M6). Reference: None = what the published
        code does: the family record's ``reference_train_mode`` (MERT, MusicFM: the whole model,
        probing and PETL included, M6), else the method's wrapper (PETL_AST: linear, full FT and
        BitFit use a plain wrapper, everything in train mode; the PETL wrappers put the frozen
        backbone in eval) → corrected: False.
    pass_attention_mask: give frame models the attention mask of padded batches (R27): False → True.
    masked_pooling: mean-pool frame models over valid frames only (R27): False → True.
    norm_over_padding: the waveform extractor normalises the padded vector, padding included
        (R27, the HF processor without an attention mask): True → False (valid samples only).
    eval_attention_dropout: MusicFM's attention dropout also acts in eval mode, so predictions
        are stochastic (M7): True → False. Sets the backbone config's own
        ``eval_attention_dropout`` on families that have one; a ``backbone_config`` that says
        otherwise is an error.

    R2 (injected modules re-initialised by the backbone's initialiser) is no option here: each
    method's own init switch says it (``lora_init``, ``adapter_init``, ``expert_init``).
    """

    pos_embed: Literal["zeros", "crop_interpolate"] = option("zeros", "crop_interpolate")
    frozen_modules_train_mode: bool | None = option(None, False)
    pass_attention_mask: bool = option(False, True)
    masked_pooling: bool = option(False, True)
    norm_over_padding: bool = option(True, False)
    eval_attention_dropout: bool = option(True, False)
    profile: str = "corrected"


def eval_attention_dropout(family, overrides: dict, opts: ModelOptions, options) -> None:
    """M7: the model option sets the backbone config's ``eval_attention_dropout`` on families
    whose config has that field (MusicFM); both saying different things is an error."""
    key = "eval_attention_dropout"
    if not hasattr(family.config_cls, key):
        return
    if key in overrides and key in (options or {}) and overrides[key] != options[key]:
        raise ConfigError(
            f"backbone_config {key}={overrides[key]!r} contradicts options {key}="
            f"{options[key]!r}; set one of them (options: the model option, quirk M7)"
        )
    overrides.setdefault(key, opts.eval_attention_dropout)
