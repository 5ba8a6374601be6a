"""Adapters read from a trained model: output norms against the residual stream, the depthwise
kernels of conformer adapters, and the ablation of those kernels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .common import batches, where


@torch.no_grad()
def adapter_output_norms(model, loader, *, max_batches: int | None = 2) -> pd.DataFrame:
    """How loud each adapter is against the residual stream it writes into.

    Forward hooks on every injected adapter block (``petl_adapter`` of an adapted sub-layer) and
    on every transformer block: per token, ``‖A(·)‖ / ‖h‖`` where ``h`` is the block's input (the
    residual stream entering the block), averaged over tokens and clips.

    Returns:
        DataFrame ``layer, site ('attention' | 'ffn'), rel_norm, adapter_norm, stream_norm``
        (the two norms are token means of ‖·‖₂).
    """
    from ...backbones import anatomy

    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    sums: dict[tuple[int, str], np.ndarray] = {}
    stream: dict[int, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(anatomy.layers(backbone)):
        handles.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: stream.__setitem__(
                i, (args[0] if args else kwargs["hidden_states"]).norm(dim=-1)),
            with_kwargs=True,
        ))  # fmt: skip
        for site, attr in ((anatomy.ATTENTION, anat.attention), (anatomy.FFN, anat.ffn)):
            adapter = getattr(getattr(layer, attr), "petl_adapter", None)
            if adapter is None:
                continue

            def hook(m, args, out, key=(i, site)):
                a, h = out.norm(dim=-1), stream[key[0]]  # [B, T] each
                row = np.array([(a / h.clamp_min(1e-12)).sum().item(), a.sum().item(),
                                h.sum().item(), a.numel()])  # fmt: skip
                sums[key] = sums.get(key, 0) + row

            handles.append(adapter.register_forward_hook(hook))
    if len(handles) == len(anatomy.layers(backbone)):
        for h in handles:
            h.remove()
        raise ValueError("adapter_output_norms: the model has no adapter (method 'adapter')")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches(loader, max_batches):
            model(batch["input_values"].to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    rows = [{"layer": i, "site": site, "rel_norm": s[0] / s[3], "adapter_norm": s[1] / s[3],
             "stream_norm": s[2] / s[3]} for (i, site), s in sorted(sums.items())]  # fmt: skip
    return pd.DataFrame(rows)


def _conformers(model):
    from ...methods.blocks import Conformer

    out = []
    for name, module in model.named_modules():
        if isinstance(module, Conformer):
            layer, _ = where(name + ".x")
            site = "attention" if ".attention." in f".{name}." else "ffn"
            out.append((int(layer), site, module))
    return out


def conformer_kernels(model) -> pd.DataFrame:
    """The depthwise kernels of every conformer adapter: ``|w|`` per tap, mean over channels.

    Returns:
        DataFrame ``layer, site, tap (offset from the current token: -(k-1)//2 .. k//2),
        weight_abs``. A kernel that has learned to use context has mass away from offset 0.
    """
    rows = []
    for layer, site, block in _conformers(model):
        w = block.depthwise.weight.detach().float().cpu()[:, 0]  # [r, k]
        k = w.shape[-1]
        centre = (k - 1) // 2  # padding='same' puts (k-1)//2 taps before the current token
        for j, v in enumerate(w.abs().mean(0).tolist()):
            rows.append({"layer": layer, "site": site, "tap": j - centre, "weight_abs": v})
    if not rows:
        raise ValueError("conformer_kernels: the model has no conformer adapter")
    return pd.DataFrame(rows)


@torch.no_grad()
def _recalibrate(model, blocks: list, loader, max_batches: int | None, device) -> None:
    """Re-estimate the BatchNorm statistics of ``blocks`` on ``loader`` (cumulative average),
    everything else in eval mode."""
    was_training = model.training
    model.eval()
    norms = [b.bn for b in blocks]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
        bn.train()
    try:
        for batch in batches(loader, max_batches):
            model(batch["input_values"].to(device))
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
        for bn in norms:
            bn.train(was_training)


def depthwise_ablation(
    model, loader, *, calibrate=None, max_calibration_batches: int | None = None, device=None
) -> pd.DataFrame:
    """Metrics on ``loader`` with each conformer adapter's depthwise kernel as trained, cut to
    its centre tap (no context: each token only scales itself), and zeroed (weights 0, bias kept).

    Cutting the kernel changes what the following BatchNorm sees, so its running statistics no
    longer fit; with ``calibrate`` (e.g. the train loader) they are re-estimated on it for every
    variant (the trained one too, so the rows compare alike). Weights and BatchNorm statistics
    are restored afterwards.

    Returns:
        DataFrame ``kernel, <metrics of petl_kit.metrics.evaluate>`` (one row per variant).
    """
    from ...training.metrics import evaluate

    blocks = [block for _, _, block in _conformers(model)]
    if not blocks:
        raise ValueError("depthwise_ablation: the model has no conformer adapter")
    device = device or next(model.parameters()).device
    convs = [b.depthwise for b in blocks]
    saved = [c.weight.detach().clone() for c in convs]
    stats = [{k: v.clone() for k, v in b.bn.state_dict().items()} for b in blocks]
    rows = []
    try:
        for variant in ("trained", "centre tap only", "zeroed"):
            with torch.no_grad():
                for conv, w in zip(convs, saved, strict=True):
                    keep = w.clone()
                    if variant != "trained":
                        centre = (w.shape[-1] - 1) // 2  # 'same' padding: the current token
                        keep.zero_()
                        if variant == "centre tap only":
                            keep[..., centre] = w[..., centre]
                    conv.weight.copy_(keep)
            if calibrate is not None:
                _recalibrate(model, blocks, calibrate, max_calibration_batches, device)
            metrics = evaluate(model, loader, model.task, device)
            rows.append({"kernel": variant, **{k: v for k, v in metrics.items() if k != "n"}})
    finally:
        with torch.no_grad():
            for conv, w in zip(convs, saved, strict=True):
                conv.weight.copy_(w)
        for block, state in zip(blocks, stats, strict=True):
            block.bn.load_state_dict(state)
    return pd.DataFrame(rows)
