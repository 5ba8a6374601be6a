"""The feature extractor that belongs to a backbone family (its record's input kind, sample rate
and options): fbank for AST, waveforms for the frame models."""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel

from ..config import ConfigError
from ..data.features import FbankExtractor, WaveformExtractor
from .registry import Family, get_family


def _make_extractor(fam: Family, config: PretrainedConfig, kwargs: dict):
    rate = kwargs.pop("sample_rate", fam.sample_rate)
    if rate != fam.sample_rate:
        raise ConfigError(
            f"backbone {fam.name!r} takes {fam.sample_rate} Hz audio; sample_rate={rate} is not "
            f"valid (the datasets resample to the extractor's rate)"
        )
    cls = FbankExtractor if fam.input_kind == "fbank" else WaveformExtractor
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"{cls.__name__} ({fam.name}) has no option(s) {unknown}; valid: {valid}")
    return cls(**{"sample_rate": fam.sample_rate, **fam.extractor_options(config), **kwargs})


def feature_extractor(backbone: PreTrainedModel, **kwargs: Any):
    """The feature extractor that belongs to ``backbone``: the record's input kind and sample
    rate, options that follow from the backbone's config, then ``kwargs``."""
    fam = get_family(backbone.petl_family)
    return _make_extractor(fam, backbone.config, dict(kwargs))


def feature_extractor_for(family: str, **kwargs: Any):
    """The feature extractor of ``family``'s base config (no model built); ``kwargs`` override
    its fields, e.g. ``feature_extractor_for('ast', max_length=400)``."""
    fam = get_family(family)
    return _make_extractor(fam, fam.config_cls(**fam.base_config), dict(kwargs))
