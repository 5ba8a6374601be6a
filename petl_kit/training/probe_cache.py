"""Backbone-output cache for linear probing: the frozen backbone runs once per clip, then every
epoch trains only the head (and the final LayerNorm, as the PETL_AST reference ``linear`` does).

What is cached, and why it is exact: see :class:`ProbeModel`. Stored as ``[N, D]`` float32
``.npy`` files under ``<cache_dir()>/backbone_outputs/<key>.npy`` (memory-mapped), keyed by the
clip identities, the extractor configuration, the channel and a hash of the frozen weights,
family and pooling; the final LayerNorm's own γ, β train and are not part of the key.

>>> loaders = splits.loaders(model.feature_extractor(), batch_size=32, seed=0)  # no SpecAugment
>>> probe, cached = cached_probe(model, loaders)
>>> result = fit(probe, cached, cfg)        # trains model.head and the final LN in place
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.cache import CACHE_VERSION, _hash, cache_dir, clip_identity

__all__ = ["ProbeModel", "cached_probe", "pooled_outputs"]


# ---------------------------------------------------------------- backbone outputs (linear probe)
class ProbeModel(torch.nn.Module):
    """The trainable tail of a linear probe, fed cached backbone outputs (PETL_AST ``linear``).

    The final LayerNorm acts per token, LN(h_t) = γ ⊙ n_t + β with the parameter-free
    n_t = (h_t − mean_t) / sqrt(var_t + eps), and pooling is a weighted mean whose weights sum to
    1, so pool(LN(h)) = γ ⊙ pool(n) + β exactly. Caching pool(n) ``[D]`` per clip therefore trains
    γ, β (the reference's trainable final LN) and the head as the full model would. Without a
    final norm, pool(h) is cached and only the head trains.

    Shares (does not copy) ``model.head`` and the final norm, so training it trains ``model``.
    Forward: ``pooled [B, D] -> logits [B, C]``.
    """

    def __init__(self, model):
        from ..backbones import anatomy

        super().__init__()
        self.head = model.head
        self.final_norm = anatomy.final_norm(model.backbone)
        self.task, self.method = model.task, model.method

    def forward(self, pooled: torch.Tensor, attention_mask=None) -> torch.Tensor:
        norm = self.final_norm
        if norm is not None and norm.weight is not None:
            pooled = pooled * norm.weight + (norm.bias if norm.bias is not None else 0.0)
        return self.head(pooled)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}


def _probe_checks(model, loaders) -> None:
    from ..backbones import anatomy

    norm = anatomy.final_norm(model.backbone)
    allowed = {id(p) for p in model.head.parameters()} | {
        id(p) for p in (norm.parameters() if norm else [])
    }
    extra = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in allowed]
    if extra:
        raise ValueError(
            f"backbone-output cache: only the head and final norm may train, but "
            f"{extra[:3]} also do (method {model.method!r}); cache only linear probes"
        )
    from ..data.segments import SegmentDataset
    from ..model.heads import LayerAggregationHead

    if isinstance(model.head, LayerAggregationHead):
        raise ValueError(
            "backbone-output cache: the head reads every layer (layer_aggregation="
            f"{model.head.mode!r}), but the cache holds the last layer's pooled output only"
        )
    for split, loader in loaders.items():
        if isinstance(loader.dataset, SegmentDataset):
            raise ValueError(
                f"backbone-output cache: the {split} loader crops or segments clips "
                "(train_crop / eval_segment), so one output per clip does not exist"
            )
        if getattr(loader.dataset, "augment", None) is not None:
            raise ValueError(
                f"backbone-output cache: the {split} loader augments its inputs "
                "(SpecAugment), so backbone outputs differ every epoch; build the "
                "loaders without spec_augment (freq_mask = time_mask = 0)"
            )
    noisy, was_training = _stochastic_in_training(model), model.training
    model.train(was_training)
    if noisy:
        raise ValueError(
            f"backbone-output cache: the frozen backbone is stochastic in train mode "
            f"({noisy[:3]}; reference quirk R26/M6), so cached outputs would differ "
            "from training; use options={'frozen_modules_train_mode': False}"
        )


def _stochastic_in_training(model) -> list[str]:
    """What would make the frozen backbone's output random while the model trains: asks the
    model's own train-mode policy (``PetlModel.train``) which frozen modules stay in train mode."""
    model.train()
    bb, cfg = model.backbone, model.backbone.config
    mods = [(n, m) for n, m in bb.named_modules() if m.training]
    noisy = [n for n, m in mods if isinstance(m, torch.nn.Dropout) and m.p > 0]
    if getattr(cfg, "attention_probs_dropout_prob", 0) or getattr(cfg, "attention_dropout", 0):
        noisy += [n for n, m in mods if "Attention" in type(m).__name__][:1]
    encoder = getattr(bb, "encoder", None)
    if getattr(cfg, "layerdrop", 0) and encoder is not None and encoder.training:
        noisy.append("encoder layerdrop")
    if (
        bb.training
        and getattr(cfg, "apply_spec_augment", False)
        and getattr(cfg, "mask_time_prob", 0)
    ):
        noisy.append("HF time masking")
    return noisy


def _fingerprint(model) -> str:
    """Hash of everything that shapes the cached outputs: frozen weights, pooling, extractor."""
    from ..backbones import anatomy

    norm = anatomy.final_norm(model.backbone)
    skip = {id(t) for t in (norm.parameters() if norm else [])}
    h = hashlib.blake2b(digest_size=10)
    for name, t in model.backbone.state_dict(keep_vars=True).items():
        if id(t) not in skip:
            h.update(name.encode() + str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([model.family, model.pooling, CACHE_VERSION]).encode())
    return h.hexdigest()


@torch.no_grad()
def pooled_outputs(model, dataset, *, batch_size=32, device="cpu", root=None, progress=True):
    """``[N, D]`` float32 memmap of pool(normalised last hidden state before the final LN) for
    every clip of ``dataset`` (an ``AudioDataset``), computed once in eval mode and stored under
    ``<cache>/backbone_outputs/``; keyed by clip identities, extractor and backbone fingerprint."""
    from ..backbones import anatomy
    from ..data.dataset import collate

    ex = dataset.extractor
    key = _hash(
        [
            _fingerprint(model),
            [clip_identity(c) for c in dataset.clips],
            type(ex).__name__,
            dataclasses.asdict(ex),
            dataset.channel,
        ]
    )
    folder = Path(root or cache_dir()) / "backbone_outputs"
    path = folder / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    folder.mkdir(parents=True, exist_ok=True)
    norm, captured = anatomy.final_norm(model.backbone), {}
    handle = norm.register_forward_hook(lambda m, i, o: captured.update(h=i[0])) if norm else None
    was_training, out = model.training, None
    model.eval().to(device)
    tmp = folder / f".{key}.{os.getpid()}.npy"
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
        row = 0
        for batch in tqdm(loader, desc="caching backbone outputs", disable=not progress):
            mask = batch.get("attention_mask")
            hidden, frames = model.encode(
                batch["input_values"].to(device), None if mask is None else mask.to(device)
            )
            if norm is not None:  # the final norm's input, normalised without its affine
                hidden = torch.nn.functional.layer_norm(
                    captured["h"].float(), norm.normalized_shape, eps=norm.eps
                )
            pooled = model.pool(hidden.float(), frames).cpu().numpy()
            if out is None:
                out = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(len(dataset), pooled.shape[1])
                )
            out[row : row + len(pooled)] = pooled
            row += len(pooled)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


class _Pooled(Dataset):
    def __init__(self, pooled, source):
        self.pooled, self.src = pooled, source

    def __len__(self):
        return len(self.pooled)

    def __getitem__(self, i):
        clip, item = self.src.clips[i], {"index": i}
        item["input_values"] = torch.from_numpy(np.array(self.pooled[i], dtype=np.float32))
        if self.src.task == "multilabel":
            item["label"] = torch.zeros(self.src.num_classes).index_fill_(
                0, torch.tensor(clip.labels), 1.0
            )
        else:
            item["label"] = clip.label
        return item


def cached_probe(model, loaders: dict, *, device="auto", root=None, progress=True):
    """``(ProbeModel, loaders over cached pooled outputs)`` for linear probing (``fit`` them).

    ``loaders``: ``DatasetSplits.loaders(...)`` without SpecAugment. The backbone runs once per
    clip (the first, forward-only pass); every epoch then trains the head (and final LN) only. The
    new loaders keep each loader's batch size, shuffling and generator state, so a run draws the
    same batches as the uncached one. Raises ValueError when caching would change the training
    (a trainable tensor inside the backbone, SpecAugment, a stochastic frozen backbone).
    """
    from ..data.dataset import collate
    from .train import pick_device

    _probe_checks(model, loaders)
    dev, out = pick_device(device), {}
    for split, loader in loaders.items():
        pooled = pooled_outputs(
            model,
            loader.dataset,
            batch_size=loader.batch_size,
            device=dev,
            root=root,
            progress=progress,
        )
        gen = None
        if loader.generator is not None:
            gen = torch.Generator()
            gen.set_state(loader.generator.get_state())
        shuffle = isinstance(loader.sampler, torch.utils.data.RandomSampler)
        out[split] = DataLoader(
            _Pooled(pooled, loader.dataset),
            batch_size=loader.batch_size,
            shuffle=shuffle,
            generator=gen,
            collate_fn=collate,
        )
    return ProbeModel(model), out
