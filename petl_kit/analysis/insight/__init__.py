"""Method-specific looks at a trained model, for the method notebooks' last cells
(``from petl_kit.analysis import insight``; ``insight.<look>``). One module per concern:

- ``features``: :func:`pooled_features`, :func:`separability`, :func:`project_2d` — how well the
  (frozen) pooled features already separate the classes (linear probing);
- ``weights``: :func:`weight_change`, :func:`by_layer` — how far each trainable tensor moved, per
  layer and module (full fine-tuning, BitFit); :func:`lora_spectra`, :func:`effective_rank` —
  the singular values of LoRA's updates;
- ``attention``: :func:`attention_probs`, :func:`attention_mass` — attention on prompt tokens and
  prefix keys (prompt and prefix tuning);
- ``adapters``: :func:`adapter_output_norms`, :func:`conformer_kernels`,
  :func:`depthwise_ablation` — how loud adapters are and what their depthwise kernels do.
"""

from .adapters import adapter_output_norms, conformer_kernels, depthwise_ablation
from .attention import attention_mass, attention_probs
from .features import pooled_features, project_2d, separability
from .weights import by_layer, effective_rank, lora_spectra, weight_change

__all__ = [
    "pooled_features",
    "separability",
    "project_2d",
    "weight_change",
    "by_layer",
    "lora_spectra",
    "effective_rank",
    "attention_probs",
    "attention_mass",
    "adapter_output_norms",
    "conformer_kernels",
    "depthwise_ablation",
]
