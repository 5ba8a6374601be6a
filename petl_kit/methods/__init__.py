"""PETL methods: importing this package registers every method (one import line each)."""

from . import bitfit, full_ft, linear  # noqa: F401  (registration side effect)
from .registry import (
    MethodConfig,
    MethodSpec,
    config_keys,
    get_method,
    list_methods,
    make_config,
    register_method,
)

__all__ = [
    "MethodConfig",
    "MethodSpec",
    "config_keys",
    "get_method",
    "list_methods",
    "make_config",
    "register_method",
]
