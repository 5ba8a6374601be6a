"""What the reparameterisation methods (LoRA, SSF) share: their targets inside a block and the
merge / unmerge mechanics of a wrapper around a frozen ``Linear`` or pointwise ``Conv1d``.

Targets (spec ``methods.md`` §4.3, §12): ``q, k, v, o`` (the attention projections the anatomy
names), ``ffn_in`` / ``ffn_out`` (the two Linears of every FFN of a block: both of a conformer's
macaron FFNs) and ``conv`` (the pointwise, kernel-1 ``Conv1d`` layers of a conformer's conv
module; none on Transformer blocks, so one music config serves MERT and MusicFM).

Merging (quirk M5): :class:`MergeableWrapper` keeps the frozen ``weight`` / ``bias`` under their
own names and folds the method's update into them in place (:meth:`~MergeableWrapper.merge`),
or takes it out again (:meth:`~MergeableWrapper.unmerge`), each idempotent. A method config with
``merge_on_eval=True`` (the music reference) merges at every switch to eval mode and unmerges at
every switch to train mode (:func:`follow_mode`, called by ``PetlModel.train``), with the small
floating-point drift the reference has; False merges only on request (``PetlModel.merge``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import anatomy

TARGETS = ("q", "k", "v", "o", "ffn_in", "ffn_out", "conv")
CONV_SITE = "conv"  # the conformer's convolution module (anatomy extra site)
_SPELLINGS = {
    "o_proj": "o",
    "out_proj": "o",
    "out": "o",
    "output": "o",
    "query": "q",
    "key": "k",
    "value": "v",
    "intermediate_dense": "ffn_in",
    "fc1": "ffn_in",
    "output_dense": "ffn_out",
    "fc2": "ffn_out",
}


def canonical_target(name: str) -> str:
    """``'Wq'``, ``'q_proj'``, ``'out_proj'``, ``'fc1'`` ... → ``'q'``, ``'o'``, ``'ffn_in'``."""
    key = name.strip().lower()
    key = _SPELLINGS.get(key, key)
    if key.endswith("_proj"):
        key = key.removesuffix("_proj")
    if len(key) == 2 and key[0] == "w":  # Wq, Wk, Wv, Wo (paper spelling)
        key = key[1]
    return key


def ffn_modules(layer: nn.Module, anat) -> list[nn.Module]:
    """Every FFN of a block: the anatomy's FFN site, plus extra sites shaped like it (the
    conformer's first macaron FFN)."""
    found = [anatomy.sublayer(layer, anatomy.FFN, anat)]
    for site in getattr(anat, "extra_sites", {}) or {}:
        module = anatomy.sublayer(layer, site, anat)
        if all(isinstance(getattr(module, a, None), nn.Linear) for a in anat.ffn_linears):
            found.append(module)
    return found


def conv_targets(layer: nn.Module, anat) -> list[tuple[nn.Module, str, nn.Conv1d]]:
    """``(parent, attribute, conv)`` of the pointwise convs in the block's conv module (none
    for blocks without one)."""
    if CONV_SITE not in (getattr(anat, "extra_sites", {}) or {}):
        return []
    module = anatomy.sublayer(layer, CONV_SITE, anat)
    out = []
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv1d) and child.kernel_size == (1,) and child.groups == 1:
            parent = anatomy.get_path(module, name.rpartition(".")[0]) if "." in name else module
            out.append((parent, name.rpartition(".")[2], child))
    return out


def block_targets(layer: nn.Module, anat, targets) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """``(target, parent, attribute, module)`` of every module of ``layer`` that ``targets``
    (canonical names, see :data:`TARGETS`) select, attention first, in a fixed order."""
    out = []
    attn = anatomy.sublayer(layer, anatomy.ATTENTION, anat)
    projs = anatomy.projections(layer, anat)
    for target in (t for t in ("q", "k", "v", "o") if t in targets and t in projs):
        out.append((target, attn, anat.projections[target], projs[target]))
    for ffn in ffn_modules(layer, anat):
        for target, attr in zip(("ffn_in", "ffn_out"), anat.ffn_linears, strict=True):
            if target in targets:
                out.append((target, ffn, attr, getattr(ffn, attr)))
    if CONV_SITE in targets:
        out += [(CONV_SITE, parent, attr, conv) for parent, attr, conv in conv_targets(layer, anat)]
    return out


class MergeableWrapper(nn.Module):
    """Base of a wrapper around a frozen ``Linear`` (or pointwise ``Conv1d``) whose update can be
    folded into the wrapped weight.

    Subclasses hold ``weight`` / ``bias`` (the original parameters, so the backbone's state-dict
    keys do not change), a ``merged`` flag, and implement :meth:`_fold` (``sign=+1``: put the
    update into ``weight`` / ``bias``; ``-1``: take it out again, exact up to rounding) and
    ``unload()`` (the plain module holding the current weights).
    """

    merged: bool = False

    def _fold(self, sign: int) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the frozen weights (idempotent). Merged weights are for
        inference: the method's tensors get no gradient until :meth:`unmerge`."""
        if not self.merged:
            self._fold(+1)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (idempotent; exact up to floating-point rounding)."""
        if self.merged:
            self._fold(-1)
            self.merged = False


def follow_mode(model, mode: bool) -> None:
    """The music reference's merge-on-eval (M5): when the model's method config says
    ``merge_on_eval``, unmerge on a switch to train mode, merge on a switch to eval mode."""
    if model.method and getattr(model.method_config, "merge_on_eval", False):
        model.unmerge() if mode else model.merge()
