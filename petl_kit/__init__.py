"""petl_kit: parameter-efficient transfer learning of pretrained audio transformers.

>>> import petl_kit as pk
>>> pk.list_methods()
>>> model = pk.build_model(backbone="ast", num_classes=31, method="bitfit")
>>> pk.count_parameters(model)["trainable"]
"""

__version__ = "0.1.0"

from .backbones import FAMILIES, CheckpointError, load_backbone, tiny_config
from .config import ConfigError
from .efficiency import count_parameters
from .methods import get_method, list_methods, make_config, register_method
from .model import PetlModel, build_model, load_trained, save_trained

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "ConfigError",
    "PetlModel",
    "build_model",
    "count_parameters",
    "get_method",
    "list_methods",
    "load_backbone",
    "load_trained",
    "make_config",
    "register_method",
    "save_trained",
    "tiny_config",
    "__version__",
]
