"""Classifier heads and layer-wise probing (spec ``backbones_and_features.md`` §3, §6.4;
``methods.md`` §1.3).

Heads (``build_model(head=...)``), on a pooled feature ``[B, D]``:

- ``'linear'``: ``Linear(D, C)`` (PETL_AST reference; PyTorch default init);
- ``'mlp'``: ``Linear(D, D) → Dropout(0.5) → ReLU → Linear(D, C)``, the music reference's probe
  head (note the order: dropout, then ReLU). Parameters (D² + D) + (DC + C): MERT (D = 768)
  tagging 629,042, key 609,048, tempo 821,292.

Which hidden state feeds the head (``build_model(layer_aggregation=...)``):

- ``'last'``: the backbone's output (the music reference: layer 6 of a 6-layer encoder, M2);
- ``'weighted_sum'``: a learnable softmax-weighted sum over all L + 1 hidden states (SUPERB's
  featurizer; the layer weighting MERT's model card recommends, M19), L + 1 parameters starting
  equal, so the probe starts from the plain layer average;
- ``'conv1d'``: the MERT model card's aggregator ``Conv1d(L + 1, 1, kernel_size=1)`` over the
  time-pooled states (a free weighted sum with a bias; L + 2 parameters, PyTorch default init).

Mean pooling over time and either aggregation are linear, so pooling each state first and then
aggregating equals aggregating the sequences and pooling once; the kit pools first
(``[B, L + 1, D]`` into the head) so the aggregator costs nothing per frame. Aggregators live
inside ``model.head``: they are counted in the ``head`` group and train at the head's LR.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError

HEADS = ("linear", "mlp")
LAYER_AGGREGATIONS = ("last", "weighted_sum", "conv1d")
MLP_DROPOUT = 0.5


def classifier(kind: str, hidden: int, num_classes: int) -> nn.Module:
    """``[B, D] -> [B, C]``: ``'linear'`` or the music reference's ``'mlp'`` head."""
    if kind == "linear":
        return nn.Linear(hidden, num_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.Dropout(MLP_DROPOUT),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
    raise ConfigError(f"unknown head {kind!r}; valid heads: {', '.join(HEADS)}")


class LayerAggregationHead(nn.Module):
    """Weighted sum over hidden states, then a classifier: ``[B, S, D] -> [B, C]``.

    Args:
        num_states: S = layers + 1 (the first block's input and every block's output).
        head: the classifier on the aggregated ``[B, D]``.
        mode: ``'weighted_sum'`` (softmax over ``layer_logits [S]``, init 0 = equal weights) or
            ``'conv1d'`` (``Conv1d(S, 1, 1)``: weights and a bias, no normalisation).
    """

    def __init__(self, num_states: int, head: nn.Module, mode: str):
        super().__init__()
        self.mode = mode
        if mode == "weighted_sum":
            self.layer_logits = nn.Parameter(torch.zeros(num_states))
        elif mode == "conv1d":
            self.aggregator = nn.Conv1d(num_states, 1, kernel_size=1)
        else:
            raise ValueError(f"mode={mode!r}; valid: 'weighted_sum', 'conv1d'")
        self.num_states = num_states
        self.classifier = head

    def layer_weights(self) -> torch.Tensor:
        """``[S]`` weight of each state (softmax for ``weighted_sum``, raw for ``conv1d``)."""
        if self.mode == "weighted_sum":
            return self.layer_logits.softmax(0)
        return self.aggregator.weight.view(-1)

    def aggregate(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[B, S, D] -> [B, D]``."""
        if pooled.dim() != 3 or pooled.shape[1] != self.num_states:
            raise ValueError(
                f"layer-aggregation head expects per-state pooled features [B, {self.num_states}, "
                f"D], got {tuple(pooled.shape)}; it needs every hidden state (PetlModel.forward "
                "pools them), so last-layer feature caches cannot feed it"
            )
        if self.mode == "weighted_sum":
            return torch.einsum("s,bsd->bd", self.layer_weights().to(pooled.dtype), pooled)
        return self.aggregator(pooled)[:, 0]  # Conv1d over the state axis: [B, 1, D]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aggregate(pooled))


def make_head(
    kind: str, hidden: int, num_classes: int, layer_aggregation: str = "last", num_states: int = 0
) -> nn.Module:
    """The model's head: a classifier, wrapped in a :class:`LayerAggregationHead` unless
    ``layer_aggregation='last'``."""
    if layer_aggregation not in LAYER_AGGREGATIONS:
        raise ConfigError(
            f"unknown layer_aggregation {layer_aggregation!r}; valid: "
            f"{', '.join(LAYER_AGGREGATIONS)}"
        )
    head = classifier(kind, hidden, num_classes)
    if layer_aggregation == "last":
        return head
    return LayerAggregationHead(num_states, head, layer_aggregation)
