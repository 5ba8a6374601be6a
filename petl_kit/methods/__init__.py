"""PETL methods: importing this package registers every method (one import line each)."""

# registration side effect; this order is the order of list_methods()
from . import linear, full_ft, bitfit, prompt_tuning, lora, ssf, prefix_tuning, adapter, dense_moa, soft_moa  # noqa: E501, F401, I001  # fmt: skip
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
