"""Method-specific looks at a trained model, for the method notebooks' last cells.

- :func:`pooled_features` / :func:`separability`: how well the (frozen) pooled features already
  separate the classes (linear probing);
- :func:`weight_change`: how far each trainable tensor moved from its initial value, per layer
  and module (full fine-tuning, BitFit, anything that trains backbone tensors).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch

_LAYER = re.compile(r"\.(?:layers?|blocks?)\.(\d+)\.")


@torch.no_grad()
def pooled_features(model, loader, device=None) -> tuple[np.ndarray, np.ndarray]:
    """``(features [N, D], labels [N] or [N, C])``: the pooled representation the head sees
    (on ``device``, default: where the model is)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    feats, labels = [], []
    try:
        for batch in loader:
            mask = batch.get("attention_mask")
            hidden, frames = model.encode(
                batch["input_values"].to(device), None if mask is None else mask.to(device)
            )
            feats.append(model.pool(hidden, frames).float().cpu())
            labels.append(batch["labels"])
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def separability(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> dict:
    """Accuracy of two simple classifiers fitted on ``train`` features, scored on ``test``.

    ``logistic``: L2 logistic regression on standardised features (a well-converged linear
    probe); ``nearest_centroid``: class means, no training at all. Multiclass labels only.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (xtr, ytr), (xte, yte) = train, test
    out = {}
    for name, clf in (
        ("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
        ("nearest_centroid", make_pipeline(StandardScaler(), NearestCentroid())),
    ):
        out[name] = float((clf.fit(xtr, ytr).predict(xte) == yte).mean())
    return out


def project_2d(features: np.ndarray) -> np.ndarray:
    """PCA of ``[N, D]`` standardised features to ``[N, 2]``."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    return PCA(n_components=2).fit_transform(StandardScaler().fit_transform(features))


def _where(name: str) -> tuple[str, str]:
    """``(layer, module)`` of a parameter name: ``('3', 'q_proj')``, ``('head', 'head')``."""
    rel = name.removeprefix("backbone.")
    module = rel.rsplit(".", 1)[0].split(".")[-1]  # the module that owns the tensor
    match = _LAYER.search("." + rel)
    if match:
        return match.group(1), module
    return ("head" if name.startswith("head.") else rel.split(".")[0]), module


def weight_change(model, initial, *, only: str | None = None) -> pd.DataFrame:
    """Relative change ``‖w − w0‖ / ‖w0‖`` of every trainable tensor.

    Args:
        model: the trained model; initial: the same model before training (e.g.
            ``RunResult.initial_model()``).
        only: keep tensors whose name ends with this (``'bias'`` for BitFit).

    Returns:
        DataFrame ``name, layer, module, kind ('weight' | 'bias' | ...), numel, rel_change,
        abs_change`` (``abs_change`` = ‖w − w0‖ / sqrt(numel), RMS of the update).
    """
    before = dict(initial.named_parameters())
    rows = []
    for name, p in model.named_parameters():
        if not p.requires_grad or name not in before or (only and not name.endswith(only)):
            continue
        w, w0 = p.detach().float().cpu(), before[name].detach().float().cpu()
        delta = (w - w0).norm().item()
        layer, module = _where(name)
        rows.append({
            "name": name, "layer": layer, "module": module, "kind": name.rsplit(".", 1)[-1],
            "numel": p.numel(), "rel_change": delta / max(w0.norm().item(), 1e-12),
            "abs_change": delta / p.numel() ** 0.5,
        })  # fmt: skip
    return pd.DataFrame(rows)


def by_layer(changes: pd.DataFrame, value: str = "rel_change") -> pd.DataFrame:
    """``layer × module`` pivot of :func:`weight_change` (numbered layers in order, then others)."""
    table = changes.pivot_table(index="layer", columns="module", values=value, aggfunc="mean")
    order = sorted(
        table.index, key=lambda x: (not str(x).isdigit(), int(x) if str(x).isdigit() else 0, str(x))
    )
    return table.loc[order]


# ---------------------------------------------------------------------------- LoRA
def lora_spectra(model) -> pd.DataFrame:
    """Singular values of every LoRA update ``ΔW = s · B A`` (``[d_out, d_in]``, rank ≤ r).

    Returns:
        DataFrame ``layer (int), target ('q' | 'k' | 'v' | 'o'), k (1..r), sigma, energy``
        (``energy`` = σ_k² / Σσ², the share of ‖ΔW‖²_F in direction k), one row per singular
        value, layers in order.
    """
    from ..methods.lora import LoRALinear, _canonical_target

    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, LoRALinear):
            continue
        layer, _ = _where(name + ".weight")
        delta = module.scaling * module.petl_lora.delta_weight().detach().float().cpu()
        sigma = torch.linalg.svdvals(delta)[: module.petl_lora.A.out_features]  # rank ≤ r
        energy = sigma**2 / (sigma**2).sum().clamp_min(1e-30)
        target = _canonical_target(name.rsplit(".", 1)[-1])
        for k, (s, e) in enumerate(zip(sigma.tolist(), energy.tolist(), strict=True), start=1):
            rows.append({"layer": int(layer), "target": target, "k": k, "sigma": s, "energy": e})
    if not rows:
        raise ValueError("lora_spectra: the model has no LoRALinear module (method 'lora')")
    return pd.DataFrame(rows).sort_values(["layer", "target", "k"], ignore_index=True)


def effective_rank(spectra: pd.DataFrame, energy: float = 0.9) -> pd.DataFrame:
    """Per ``layer × target`` of :func:`lora_spectra`: how many directions ΔW really uses.

    Columns: ``erank`` = exp(entropy of σ_k / Σσ) (Roy & Vetterli 2007; 1 for a rank-1 update,
    r when all r singular values are equal), ``rank_<energy>`` = the fewest directions holding
    that share of ‖ΔW‖²_F, ``norm`` = ‖ΔW‖_F.
    """

    def one(group: pd.DataFrame) -> pd.Series:
        s = group["sigma"].to_numpy()
        p = s / max(s.sum(), 1e-30)
        p = p[p > 0]
        cum = np.cumsum(np.sort(group["energy"].to_numpy())[::-1])
        return pd.Series({
            "erank": float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0,
            f"rank_{energy:g}": int(np.searchsorted(cum, energy - 1e-9) + 1) if s.any() else 0,
            "norm": float(np.sqrt((s**2).sum())),
        })  # fmt: skip

    out = spectra.groupby(["layer", "target"])[["sigma", "energy"]].apply(one).reset_index()
    return out.astype({f"rank_{energy:g}": int})


# ---------------------------------------------------------------------------- attention
def _batches(loader, max_batches: int | None):
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        yield batch


@torch.no_grad()
def attention_probs(model, input_values: torch.Tensor) -> list[torch.Tensor]:
    """The attention probabilities of every block for one batch, read through hooks.

    Forward hooks on each block's query and key projections (found by
    :func:`petl_kit.anatomy.projections`, so LoRA-wrapped projections count with their update)
    capture ``Q, K [B, T, H·d]``; the probabilities are ``softmax(Q Kᵀ / √d)`` per head, with
    the block's prefix keys ``petl_prefix_k`` (prefix tuning) prepended to ``K`` as the prefix
    attention function does. Prompt tokens are in ``Q`` and ``K`` already. Any attention
    implementation works (no eager forward needed); no padding mask is applied (AST batches have
    none).

    Args:
        input_values: ``[B, L, n_mels]`` (AST).

    Returns:
        one ``[B, H, T, P + T]`` tensor per block (P = the block's prefix length, 0 without one).
    """
    from ..backbones import anatomy

    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    heads = backbone.config.num_attention_heads
    captured: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    blocks = anatomy.layers(backbone)
    for i, layer in enumerate(blocks):
        for which, proj in anatomy.projections(layer, anat).items():
            if which in ("q", "k"):
                handles.append(proj.register_forward_hook(
                    lambda m, a, out, key=(i, which): captured.__setitem__(key, out.detach())
                ))  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        model(input_values.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    probs = []
    for i, layer in enumerate(blocks):
        q, k = captured[(i, "q")], captured[(i, "k")]  # [B, T, H·d]
        b, t, hd = q.shape
        d = hd // heads
        prefix = getattr(anatomy.sublayer(layer, anatomy.ATTENTION, anat), "petl_prefix_k", None)
        if prefix is not None and prefix.shape[0]:
            k = torch.cat([prefix.detach().to(k.dtype).expand(b, -1, -1), k], dim=1)
        q = q.view(b, t, heads, d).transpose(1, 2)  # [B, H, T, d]
        k = k.view(b, k.shape[1], heads, d).transpose(1, 2)  # [B, H, P + T, d]
        scores = (q.float() @ k.float().transpose(-1, -2)) * d**-0.5
        probs.append(scores.softmax(-1).cpu())  # [B, H, T, P + T]
    return probs


def attention_mass(
    model, loader, *, on: str = "prompts", max_batches: int | None = 2
) -> pd.DataFrame:
    """Share of attention the sequence's own tokens give to the method's tokens, per block and
    head (:func:`attention_probs`).

    Args:
        on: ``'prompts'`` — keys whose role is PROMPT (prompt tuning: the N prompts of each
            block); ``'prefix'`` — the P/2 prefix keys of prefix tuning.
        max_batches: batches of ``loader`` to average over (None: all).

    Returns:
        DataFrame ``layer, head, mass, uniform``: ``mass`` = attention probability on those keys,
        summed over them and averaged over the queries that are not prompts (CLS, DIST, patches)
        and over clips; ``uniform`` = the mass if every key were attended to equally
        (keys on / all keys), the no-preference level.
    """
    from ..backbones.anatomy import PROMPT

    if on not in ("prompts", "prefix"):
        raise ValueError(f"attention_mass: on={on!r}; valid: 'prompts', 'prefix'")
    totals, uniform, clips = None, [], 0
    for batch in _batches(loader, max_batches):
        probs = attention_probs(model, batch["input_values"])  # per block [B, H, T, P + T]
        masses, uniform = [], []
        for p in probs:
            t, n_keys = p.shape[2], p.shape[3]
            roles = model.role_layout(t)
            queries = roles != PROMPT  # [T]
            keys = torch.zeros(n_keys, dtype=torch.bool)  # [P + T]
            if on == "prefix":
                keys[: n_keys - t] = True
            else:
                keys[n_keys - t :] = roles == PROMPT
            if not keys.any():
                raise ValueError(f"attention_mass: block has no {on} keys (method?)")
            masses.append(p[:, :, queries][..., keys].sum(-1).mean(2).sum(0))  # [H]
            uniform.append(float(keys.sum()) / n_keys)
        step = torch.stack(masses)  # [blocks, H], summed over the batch's clips
        totals = step if totals is None else totals + step
        clips += probs[0].shape[0]
    if totals is None:
        raise ValueError("attention_mass: the loader yielded no batch")
    mean = (totals / clips).numpy()
    return pd.DataFrame([
        {"layer": i, "head": h, "mass": float(mean[i, h]), "uniform": uniform[i]}
        for i in range(mean.shape[0]) for h in range(mean.shape[1])
    ])  # fmt: skip


# ---------------------------------------------------------------------------- adapters
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
    from ..backbones import anatomy

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
        for batch in _batches(loader, max_batches):
            model(batch["input_values"].to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    rows = [{"layer": i, "site": site, "rel_norm": s[0] / s[3], "adapter_norm": s[1] / s[3],
             "stream_norm": s[2] / s[3]} for (i, site), s in sorted(sums.items())]  # fmt: skip
    return pd.DataFrame(rows)


def _conformers(model):
    from ..methods.blocks import Conformer

    out = []
    for name, module in model.named_modules():
        if isinstance(module, Conformer):
            layer, _ = _where(name + ".x")
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
        for batch in _batches(loader, max_batches):
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
    from ..training.metrics import evaluate

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
