"""The method registry: one :class:`MethodSpec` per PETL method, registered by its own file.

A method file holds a frozen config dataclass, its modules, ``apply(model, cfg)`` (which mutates
the model in place: unfreezes what it trains, injects what it adds) and one
:func:`register_method` call. Per-method facts used by the generic contract tests live on the
spec (``identity_at_init``, ``merges``), not in ``isinstance`` special cases.

Presets (:func:`register_preset`, :func:`method_preset`, :func:`list_presets`,
:func:`get_preset`) name a method config from a paper, per profile, e.g. ``'music_adapter'`` or
``'music_lora'``; they sit beside the method they configure.

Injected parameters must live under an attribute whose name starts with ``petl_``: that is how
:func:`petl_kit.efficiency.count_parameters` tells method parameters from backbone ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, build


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method config; ``profile`` is filled in by :func:`make_config`."""

    profile: str = "corrected"


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: canonical name (``'lora'``).
        config_cls: its frozen config dataclass.
        apply: ``apply(model: PetlModel, cfg) -> None``.
        lr: the reference code's learning rate for the method (AdamW, cosine to 0).
        aliases: extra spellings (the reference spellings are matched case- and dash-insensitively
            anyway: 'full-FT', 'LoRA', 'Soft-MoA').
        identity_at_init: ``f(cfg) -> bool``: True when, at init, the model's output equals the
            frozen backbone + head (checked by the contract tests).
        merges: the method can fold its weights into the backbone (``merge()`` / ``unmerge()``).
        paper: citation shown in the README's method table.
        test_config: method_config used by the contract tests on tiny backbones (hidden 32).
        plain_wrapper: the reference runs the method in a plain wrapper that leaves the whole
            model in train mode (linear, full FT, BitFit; quirk R26) instead of a PETL wrapper
            that puts the frozen backbone in eval.
        needs_grad_steps: optimiser steps after which every trainable tensor has had a
            non-zero gradient (2 for methods with a zero-initialised factor, e.g. LoRA's B).

    Which parameters train beyond the method's own, decided once by ``build_model`` from these
    fields and the backbone family's record (never by the method's ``apply``):

        trains_final_norm: ``f(cfg) -> bool``: the method's reference wrapper keeps the final
            LayerNorm trainable on families whose reference does
            (``Family.reference_trains_final_norm``: PETL_AST's AST wrappers).
        wrapped_sites: ``f(cfg) -> [site]``: the sub-layer sites (``anatomy.ATTENTION``,
            ``anatomy.FFN``) the method wraps in every block; on families whose reference
            unfreezes their LayerNorms (``Family.reference_trains_site_norms``) they train.
        bottleneck: ``f(cfg, hidden) -> r``: the width of the method's bottleneck on a backbone
            of width ``hidden``; an ``r < 1`` is refused before the method is applied.
    """

    name: str
    config_cls: type
    apply: Callable[[Any, Any], None]
    lr: float
    aliases: tuple[str, ...] = ()
    identity_at_init: Callable[[Any], bool] = lambda cfg: True
    merges: bool = False
    paper: str = ""
    test_config: dict = dataclasses.field(default_factory=dict)
    needs_grad_steps: int = 1
    plain_wrapper: bool = False
    trains_final_norm: Callable[[Any], bool] = lambda cfg: False
    wrapped_sites: Callable[[Any], list[str]] = lambda cfg: []
    bottleneck: Callable[[Any, int], int] | None = None


_REGISTRY: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register_method(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    for alias in (spec.name, *spec.aliases):
        _ALIASES[_key(alias)] = spec.name
    return spec


def list_methods() -> list[str]:
    """Canonical names of every registered method, in registration order."""
    return list(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The spec of ``name`` (reference spellings such as 'full-FT' or 'Soft-MoA' accepted)."""
    canonical = _ALIASES.get(_key(str(name)))
    if canonical is None:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}")
    return _REGISTRY[canonical]


def make_config(method: str, values: dict[str, Any] | None, profile: str = "corrected"):
    """The method's config from user ``values`` under ``profile`` (validated; see config.build)."""
    spec = get_method(method)
    return build(spec.config_cls, values, profile, owner=f"{spec.name} method_config")


def config_keys(method: str) -> list[str]:
    spec = get_method(method)
    return [f.name for f in dataclasses.fields(spec.config_cls) if f.name != "profile"]


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class MethodPreset:
    """A named method configuration from a paper, per behaviour profile.

    Attributes:
        name: the preset's name (``'music_adapter'``).
        method: the registered method it configures.
        reference: ``method_config`` reproducing the published code (quirks included).
        corrected: ``method_config`` of the corrected profile.
        doc: one line for the README and whoever lists the presets.
    """

    name: str
    method: str
    reference: dict
    corrected: dict
    doc: str = ""


_PRESETS: dict[str, MethodPreset] = {}


def register_preset(preset: MethodPreset) -> MethodPreset:
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is registered twice")
    if preset.method in _REGISTRY:  # a preset that cannot build is a bug (else checked on use)
        for profile in ("reference", "corrected"):
            make_config(preset.method, getattr(preset, profile), profile)
    _PRESETS[preset.name] = preset
    return preset


def list_presets() -> list[str]:
    """Names of every registered preset, in registration order (:func:`get_preset` describes
    one)."""
    return list(_PRESETS)


def get_preset(name: str) -> MethodPreset:
    """The :class:`MethodPreset` of ``name`` (its ``doc`` says what it reproduces)."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(_PRESETS)}")
    return _PRESETS[name]


def method_preset(name: str, profile: str = "corrected") -> dict[str, Any]:
    """``{'method': ..., 'method_config': {...}}`` of preset ``name`` under ``profile``.

    >>> pk.build_model("mert", num_classes=50, **pk.method_preset("music_lora"))
    """
    from ..config import check_profile

    check_profile(profile)
    preset = get_preset(name)
    return {"method": preset.method, "method_config": dict(getattr(preset, profile))}


# the music paper's probing (its adapter and LoRA presets sit beside their methods)
register_preset(
    MethodPreset(
        name="music_probe",
        method="linear",
        reference={"probe_final_ln": False},
        corrected={"probe_final_ln": False},
        doc="music PETL probing (§1.3): the head only (use head='mlp', encoder_depth=6 as the "
        "reference; layer_aggregation='weighted_sum' for layer-wise probing)",
    )
)
