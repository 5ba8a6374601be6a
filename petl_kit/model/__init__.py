"""The PETL model: ``build_model`` = backbone + method + pooling + head, freezing, parameter
groups, and trainable-only persistence (``save_trained`` / ``load_trained``).

May import: ``config``, ``errors``, ``backbones``, ``methods``.
"""

from .build import PetlModel, build_model
from .persist import load_trained, save_trained

__all__ = ["PetlModel", "build_model", "load_trained", "save_trained"]
