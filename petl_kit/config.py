"""Typed, validated configuration with profile-dependent defaults.

Every method config, the model options and the training options are frozen dataclasses. A field
whose default depends on the behaviour profile is declared with :func:`option`; :func:`build`
fills those defaults from the profile, checks every key and every value's type, and raises a
:class:`ConfigError` that names the key, the value and what would be valid. Nothing is silently
defaulted: an unknown key is always an error.

Profiles (``methods.md`` §15 of the spec):
    ``"corrected"`` (default) — the intended / standard method;
    ``"reference"`` — reproduce the published code's behaviour, quirk by quirk.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from .errors import ConfigError

PROFILES = ("corrected", "reference")
# Every task the kit trains and scores (the metrics of each: training.metrics.METRICS)
TASKS = ("multiclass", "multilabel", "key", "tempo")


def option(reference: Any, corrected: Any, doc: str = "") -> Any:
    """A dataclass field whose default depends on the profile (quirk switch)."""
    return dataclasses.field(default=None, metadata={"profile": (reference, corrected), "doc": doc})


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    return profile


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    if get_origin(tp) is tuple:
        return f"tuple[{_type_name(get_args(tp)[0])}, ...]"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type ``tp`` and return it (ints widen to float, lists to tuples).

    Raises:
        ConfigError naming ``where`` (e.g. ``"lora.rank"``), the value and the expected type.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp) and type(value) is type(
            next(a for a in get_args(tp) if a == value)
        ):
            return value
        raise ConfigError(f"{where} = {value!r} is not valid; choose one of {_type_name(tp)}")
    if origin in (Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            try:
                return coerce(value, arm, where)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(
            f"{where} = {value!r} ({type(value).__name__}) is not valid; expected {_type_name(tp)}"
        )
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} = {value!r} is not valid; expected None")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r} is not valid; expected {_type_name(tp)}")
        return tuple(coerce(v, get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(
        f"{where} = {value!r} ({type(value).__name__}) is not valid; expected {_type_name(tp)}"
    )


def build(cls: type, values: Mapping[str, Any] | None, profile: str = "corrected", owner: str = ""):
    """Instantiate the frozen dataclass ``cls`` from user ``values`` under ``profile``.

    Unknown keys, wrong types and bad choices raise :class:`ConfigError`. Fields declared with
    :func:`option` and left unset take the profile's value.
    """
    check_profile(profile)
    owner = owner or cls.__name__
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {owner} key(s) {', '.join(map(repr, unknown))}; valid keys: "
            f"{', '.join(sorted(k for k in fields if k != 'profile'))}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name == "profile":
            kwargs[name] = profile
            continue
        if name in values and values[name] is not None:
            kwargs[name] = coerce(values[name], hints[name], f"{owner}.{name}")
        elif "profile" in f.metadata:
            reference, corrected = f.metadata["profile"]
            kwargs[name] = reference if profile == "reference" else corrected
        elif name in values:  # explicit None
            kwargs[name] = coerce(None, hints[name], f"{owner}.{name}")
    return cls(**kwargs)


def as_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON view of a config dataclass (tuples become lists)."""
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
